"""`nubis devcluster`: a multi-host cluster of real libvirtd daemons on this machine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nubis.cli.client import api_client, api_key, console, fail, saved_token, show
from nubis.devcluster.chaos import CLUSTER, ChaosError, register_hosts, run_chaos
from nubis.devcluster.hosts import DEFAULT_BASE, DevCluster, DevClusterError

app = typer.Typer(help="Simulated hosts for trying clustering on one machine", no_args_is_help=True)
Base = Annotated[Path, typer.Option("--base", help="where the hosts keep their state")]


@app.command()
def up(
    hosts: Annotated[int, typer.Option("--hosts", help="number of hosts")] = 3,
    base: Base = DEFAULT_BASE,
    register: Annotated[bool, typer.Option(help="register the hosts in Nubis")] = True,
    offset: Annotated[
        int | None,
        typer.Option(help="address offset, to run devclusters side by side (0-40)"),
    ] = None,
    shared_disks: Annotated[
        bool,
        typer.Option(
            help="one disk directory for all hosts (--no-shared-disks: each host its "
            "own; migrations copy the disks)"
        ),
    ] = True,
) -> None:
    """Start N libvirtd hosts (dev-1..dev-N on 172.30.<offset>.11..), each in its own
    network namespace, sharing one disk directory (or each with its own)."""
    try:
        started = DevCluster(base, offset, shared_disks).up(hosts)
    except DevClusterError as exc:
        raise fail(str(exc)) from exc
    for host in started:
        console.print(f"{host.name}: {host.uri}")
    if register:
        if saved_token() is None and api_key() is None:
            console.print("not logged in: hosts not registered (run `nubis login`, then again)")
            return
        with api_client() as http:
            register_hosts(http, DevCluster(base))
        trusted = "shared disks trusted, lockspace read" if shared_disks else "own disks"
        console.print(
            f"hosts registered in cluster {CLUSTER} ({trusted}, fenced by the devcluster's kill)"
        )


@app.command()
def chaos(
    base: Base = DEFAULT_BASE,
    down_after: Annotated[
        float, typer.Option(help="the server's NUBIS_HOST_DOWN_AFTER_SECONDS")
    ] = 20.0,
    report: Annotated[Path, typer.Option(help="where the report goes")] = Path("chaos-report"),
) -> None:
    """Break the devcluster (libvirtd crash, network partition, QEMU crash, host crash)
    with HA instances on it; report detect/fence/restart times and every broken promise."""
    if len(DevCluster(base).hosts()) < 3:
        raise fail("the chaos suite needs a devcluster of 3 hosts: nubis devcluster up")
    if saved_token() is None and api_key() is None:
        raise fail("not logged in: run `nubis login` first")
    with api_client() as http:
        try:
            _, problems = run_chaos(http, DevCluster(base), down_after, report)
        except ChaosError as exc:
            raise fail(str(exc)) from exc
    console.print((report / "chaos-report.md").read_text())
    if problems:
        raise typer.Exit(1)


@app.command()
def down(
    base: Base = DEFAULT_BASE,
    purge: Annotated[bool, typer.Option(help="also delete the hosts' state and disks")] = False,
) -> None:
    """Stop every host: kill its daemons and guests; no process or mount remains."""
    DevCluster(base).down(purge=purge)
    console.print("devcluster down")


@app.command()
def status(base: Base = DEFAULT_BASE, fmt: Annotated[str, typer.Option("-f")] = "table") -> None:
    """Each host: running, listening on its address, number of processes."""
    show(DevCluster(base).status(), fmt, ["name", "uri", "running", "listening", "processes"])


@app.command("kill-host")
def kill_host(name: str, base: Base = DEFAULT_BASE) -> None:
    """Crash a host: SIGKILL its libvirtd and every qemu process on it."""
    try:
        DevCluster(base).host(name).kill()
    except DevClusterError as exc:
        raise fail(str(exc)) from exc
    console.print(f"{name} killed")


@app.command("revive-host")
def revive_host(name: str, base: Base = DEFAULT_BASE) -> None:
    """Boot a killed host again (its guests stay shut off, as after a power cut)."""
    cluster = DevCluster(base)
    try:
        cluster.start(cluster.host(name))
    except DevClusterError as exc:
        raise fail(str(exc)) from exc
    console.print(f"{name} is up")
