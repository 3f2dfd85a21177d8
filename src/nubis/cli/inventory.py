"""CLI commands for zones, clusters, capacity, rule groups, host operations and the
controllers sharing the database."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from nubis.cli.client import console, fail, request, show, wait_for_task
from nubis.cli.resources import HOST_COLS, Fmt, Wait, host_app

zone_app = typer.Typer(help="Zones (data centres)", no_args_is_help=True)
cluster_app = typer.Typer(help="Clusters (hosts sharing storage)", no_args_is_help=True)
group_app = typer.Typer(help="Rule groups (affinity, anti-affinity, hosts)", no_args_is_help=True)
controller_app = typer.Typer(
    help="Controllers (nubis serve processes sharing the database)", no_args_is_help=True
)

ZONE_COLS = ["name", "id"]
CLUSTER_COLS = [
    "name",
    "cpu_ratio",
    "memory_ratio",
    "disable_threshold",
    "max_instances_per_host",
    "weigher",
    "id",
]
GROUP_COLS = ["name", "policy", "strict", "members", "id"]
CONTROLLER_COLS = ["id", "address", "alive", "running_tasks", "hosts", "heartbeat_at", "this"]


def show_capacity(data: dict, fmt: str) -> None:
    if fmt == "json":
        show(data, fmt, [])
        return
    rows = [{"resource": r, **data[r]} for r in ("vcpus", "memory_mib", "disk_gib")]
    console.print(f"hosts: {data['hosts']}   instances: {data['instances']}")
    show(rows, fmt, ["resource", "physical", "overcommitted", "limit", "allocated", "free"])


@controller_app.command("list")
def controller_list(fmt: Fmt = "table") -> None:
    """Each controller, whether it is alive, and the tasks it runs."""
    show(request("GET", "/controllers").json(), fmt, CONTROLLER_COLS)


@zone_app.command("list")
def zone_list(fmt: Fmt = "table") -> None:
    show(request("GET", "/zones").json(), fmt, ZONE_COLS)


@zone_app.command("create")
def zone_create(name: str, fmt: Fmt = "table") -> None:
    show(request("POST", "/zones", json={"name": name}).json(), fmt, ZONE_COLS)


@zone_app.command("capacity")
def zone_capacity(ref: str, fmt: Fmt = "table") -> None:
    show_capacity(request("GET", f"/zones/{ref}/capacity").json(), fmt)


@cluster_app.command("list")
def cluster_list(fmt: Fmt = "table") -> None:
    show(request("GET", "/clusters").json(), fmt, CLUSTER_COLS)


@cluster_app.command("create")
def cluster_create(
    name: str,
    zone: Annotated[str, typer.Option(help="zone id or name")] = "default",
    cpu_ratio: float | None = None,
    memory_ratio: float | None = None,
    disable_threshold: float | None = None,
    max_instances_per_host: int | None = None,
    weigher: Annotated[str | None, typer.Option(help="spread or pack")] = None,
    fmt: Fmt = "table",
) -> None:
    body = {
        "name": name,
        "zone": zone,
        "cpu_ratio": cpu_ratio,
        "memory_ratio": memory_ratio,
        "disable_threshold": disable_threshold,
        "max_instances_per_host": max_instances_per_host,
        "weigher": weigher,
    }
    show(request("POST", "/clusters", json=body).json(), fmt, CLUSTER_COLS)


@cluster_app.command("root-pool")
def cluster_root_pool(
    ref: str,
    pool: Annotated[
        str, typer.Argument(help="storage pool of the cluster ('': none, files on each host)")
    ],
    fmt: Fmt = "table",
) -> None:
    """Where the cluster's root disks go when neither the request nor the flavor says."""
    shown = request("PATCH", f"/clusters/{ref}", json={"root_pool": pool}).json()
    show(shown, fmt, [*CLUSTER_COLS[:1], "root_pool_id", "id"])


@cluster_app.command("capacity")
def cluster_capacity(ref: str, fmt: Fmt = "table") -> None:
    show_capacity(request("GET", f"/clusters/{ref}/capacity").json(), fmt)


@host_app.command("capacity")
def host_capacity(ref: str, fmt: Fmt = "table") -> None:
    show_capacity(request("GET", f"/hosts/{ref}/capacity").json(), fmt)


@host_app.command("agent")
def host_agent(
    ref: str,
    url: Annotated[
        str | None, typer.Option(help="http://<address>:16600; left out: the host has none")
    ] = None,
    fmt: Fmt = "table",
) -> None:
    """Where the host's network agent (python -m nubis.agent) listens; its token is read
    from NUBIS_AGENT_TOKEN and kept encrypted."""
    token = os.environ.get("NUBIS_AGENT_TOKEN")
    if url and not token:
        raise fail("set NUBIS_AGENT_TOKEN to the agent's token")
    body = {"url": url, "token": token if url else None}
    shown = request("PUT", f"/hosts/{ref}/agent", json=body).json()
    show(shown, fmt, [*HOST_COLS[:3], "agent_url", "id"])


@host_app.command("enable")
def host_enable(ref: str, fmt: Fmt = "table") -> None:
    show(request("POST", f"/hosts/{ref}/actions/enable").json(), fmt, HOST_COLS)


@host_app.command("disable")
def host_disable(ref: str, fmt: Fmt = "table") -> None:
    show(request("POST", f"/hosts/{ref}/actions/disable").json(), fmt, HOST_COLS)


@host_app.command("maintenance")
def host_maintenance(ref: str, wait: Wait = False) -> None:
    """Take the host out of placement and migrate its instances away."""
    task = request("POST", f"/hosts/{ref}/actions/maintenance").json()
    if wait:
        wait_for_task(task["task_id"], timeout=3600)
        console.print(f"{ref} is in maintenance and empty")
    else:
        console.print(f"maintenance: accepted (task {task['task_id']})")


@host_app.command("exit-maintenance")
def host_exit_maintenance(ref: str, fmt: Fmt = "table") -> None:
    show(request("POST", f"/hosts/{ref}/actions/exit-maintenance").json(), fmt, HOST_COLS)


@host_app.command("evacuate")
def host_evacuate(
    ref: str,
    confirm_host_down: Annotated[
        bool,
        typer.Option(
            "--confirm-host-down", help="the host is off or fenced: its VMs cannot be running"
        ),
    ] = False,
    wait: Wait = False,
) -> None:
    """Restart the instances of a down host on other hosts of its cluster."""
    task = request(
        "POST", f"/hosts/{ref}/actions/evacuate", json={"confirm_host_down": confirm_host_down}
    ).json()
    if wait:
        wait_for_task(task["task_id"], timeout=3600)
        console.print(f"{ref} evacuated")
    else:
        console.print(f"evacuate: accepted (task {task['task_id']})")


@group_app.command("list")
def group_list(fmt: Fmt = "table") -> None:
    show(request("GET", "/rule-groups").json(), fmt, GROUP_COLS)


@group_app.command("create")
def group_create(
    name: str,
    policy: Annotated[str, typer.Option(help="affinity, anti-affinity or hosts")],
    soft: Annotated[bool, typer.Option("--soft", help="prefer instead of refuse")] = False,
    host: Annotated[list[str] | None, typer.Option(help="for policy hosts (repeat)")] = None,
    fmt: Fmt = "table",
) -> None:
    body = {"name": name, "policy": policy, "strict": not soft, "hosts": host}
    show(request("POST", "/rule-groups", json=body).json(), fmt, GROUP_COLS)
