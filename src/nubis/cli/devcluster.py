"""`nubis devcluster`: a multi-host cluster of real libvirtd daemons on this machine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nubis.cli.client import console, fail, request, saved_token, show
from nubis.devcluster.hosts import DEFAULT_BASE, DevCluster, DevClusterError

app = typer.Typer(help="Simulated hosts for trying clustering on one machine", no_args_is_help=True)
CLUSTER = "devcluster"
Base = Annotated[Path, typer.Option("--base", help="where the hosts keep their state")]


@app.command()
def up(
    hosts: Annotated[int, typer.Option("--hosts", help="number of hosts")] = 3,
    base: Base = DEFAULT_BASE,
    register: Annotated[bool, typer.Option(help="register the hosts in Nubis")] = True,
) -> None:
    """Start N libvirtd hosts (dev-1..dev-N on 127.0.0.11..) sharing one disk directory."""
    try:
        started = DevCluster(base).up(hosts)
    except DevClusterError as exc:
        raise fail(str(exc)) from exc
    for host in started:
        console.print(f"{host.name}: {host.uri}")
    if register:
        if saved_token() is None:
            console.print("not logged in: hosts not registered (run `nubis login`, then again)")
            return
        clusters = request("GET", "/clusters", params={"limit": 1000}).json()["items"]
        if CLUSTER not in {c["name"] for c in clusters}:
            # the hosts share one disk directory by construction (a bind mount libvirt
            # cannot recognise as shared): say so, so live migration is allowed
            request("POST", "/clusters", json={"name": CLUSTER, "trust_shared_storage": True})
        known = {h["uri"] for h in request("GET", "/hosts", params={"limit": 1000}).json()["items"]}
        for host in started:
            if host.uri not in known:
                request(
                    "POST", "/hosts", json={"name": host.name, "uri": host.uri, "cluster": CLUSTER}
                )
                console.print(f"registered {host.name} in cluster {CLUSTER}")


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
        cluster.host(name).start(cluster.shared)
    except DevClusterError as exc:
        raise fail(str(exc)) from exc
    console.print(f"{name} is up")
