"""CLI commands of high availability: HA instances, host fencing, the cluster's reserve
and lockspace (see docs/high-availability.md)."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from nubis.cli.client import fail, request, show
from nubis.cli.inventory import CLUSTER_COLS, cluster_app
from nubis.cli.resources import HOST_COLS, INSTANCE_COLS, Fmt, host_app, instance_app


@instance_app.command("ha")
def instance_ha(
    ref: str,
    enable: Annotated[bool, typer.Option("--enable/--disable", help="HA on or off")] = True,
    priority: Annotated[int, typer.Option(help="0-1000: higher ones restart first")] = 0,
    fmt: Fmt = "table",
) -> None:
    """Restart the instance when its host fails (elsewhere) or its QEMU dies (in place)."""
    body = {"enabled": enable, "priority": priority}
    shown = request("PUT", f"/instances/{ref}/ha", json=body).json()
    show(shown, fmt, [*INSTANCE_COLS[:2], "ha_enabled", "ha_priority", "id"])


@host_app.command("fencing")
def host_fencing(
    ref: str,
    method: Annotated[str, typer.Argument(help="none, ipmi or devcluster")],
    address: Annotated[str | None, typer.Option(help="ipmi: the BMC's address")] = None,
    username: Annotated[str | None, typer.Option(help="ipmi: BMC user")] = None,
    dev_host: Annotated[str | None, typer.Option(help="devcluster: dev-<n>")] = None,
    dev_base: Annotated[str | None, typer.Option(help="devcluster: its directory")] = None,
    fmt: Fmt = "table",
) -> None:
    """How the host is powered off before its HA instances restart elsewhere (the IPMI
    password is read from NUBIS_IPMI_PASSWORD)."""
    password = os.environ.get("NUBIS_IPMI_PASSWORD")
    if method == "ipmi" and not password:
        raise fail("set NUBIS_IPMI_PASSWORD to the BMC's password")
    body = {
        "method": method,
        "address": address,
        "username": username,
        "password": password if method == "ipmi" else None,
        "host": dev_host,
        "base": dev_base,
    }
    shown = request("PUT", f"/hosts/{ref}/fencing", json=body).json()
    show(shown, fmt, [*HOST_COLS[:3], "fence_method", "fenced_at", "id"])


@cluster_app.command("ha")
def cluster_ha(
    ref: str,
    reserve: Annotated[
        bool | None,
        typer.Option("--reserve/--no-reserve", help="keep room for the largest host's VMs"),
    ] = None,
    lockspace: Annotated[
        str | None, typer.Option(help="the hosts' virtlockd lockspace as seen here ('': none)")
    ] = None,
    fmt: Fmt = "table",
) -> None:
    """The cluster's HA reserve ((N-1) rule) and lease lockspace."""
    body = {
        k: v for k, v in (("ha_reserve", reserve), ("ha_lockspace", lockspace)) if v is not None
    }
    shown = request("PATCH", f"/clusters/{ref}", json=body).json()
    show(shown, fmt, [*CLUSTER_COLS[:1], "ha_reserve", "ha_lockspace", "id"])
