"""CLI commands for networks and instances' ports."""

from __future__ import annotations

from typing import Annotated

import typer

from nubis.cli.client import console, request, show
from nubis.cli.resources import Fmt

network_app = typer.Typer(help="Networks and their subnets", no_args_is_help=True)

NETWORK_COLS = ["name", "mode", "subnets", "bridge_name", "state", "id"]
PORT_COLS = ["position", "mac", "ip", "network_id", "status", "id"]


def _summary(network: dict) -> dict:
    network["subnets"] = ", ".join(s["cidr"] for s in network.get("subnets", []))
    return network


@network_app.command("list")
def network_list(fmt: Fmt = "table") -> None:
    page = request("GET", "/networks").json()
    if fmt == "table":
        page["items"] = [_summary(n) for n in page["items"]]
    show(page, fmt, NETWORK_COLS)


@network_app.command("create")
def network_create(
    name: str,
    subnet: Annotated[
        list[str],
        typer.Option(help="CIDR[,gateway=IP][,pool=START-END][,dns=IP+IP] (repeatable)"),
    ],
    mode: Annotated[str, typer.Option(help="nat | isolated | bridged")] = "nat",
    cluster: Annotated[str | None, typer.Option(help="default: cluster 'default'")] = None,
    host_bridge: Annotated[
        str | None, typer.Option(help="bridged: the host bridge to join")
    ] = None,
    fmt: Fmt = "table",
) -> None:
    body = {
        "name": name,
        "mode": mode,
        "cluster": cluster,
        "host_bridge": host_bridge,
        "subnets": [parse_subnet(s) for s in subnet],
    }
    created = request("POST", "/networks", json=body).json()
    show(_summary(created) if fmt == "table" else created, fmt, NETWORK_COLS)


def parse_subnet(text: str) -> dict:
    """``10.0.0.0/24,gateway=10.0.0.1,pool=10.0.0.10-10.0.0.99,dns=1.1.1.1+9.9.9.9``"""
    cidr, *options = text.split(",")
    out: dict[str, object] = {"cidr": cidr}
    for option in options:
        key, _, value = option.partition("=")
        if key == "gateway":
            out["gateway"] = value
        elif key == "pool":
            out["pool_start"], _, out["pool_end"] = value.partition("-")
        elif key == "dns":
            out["dns_servers"] = [d for d in value.split("+") if d]
        else:
            raise typer.BadParameter(f"unknown subnet option {key!r}")
    return out


@network_app.command("show")
def network_show(ref: str, fmt: Fmt = "json") -> None:
    show(request("GET", f"/networks/{ref}").json(), fmt, NETWORK_COLS)


@network_app.command("ports")
def network_ports(ref: str, fmt: Fmt = "table") -> None:
    show(request("GET", f"/networks/{ref}/ports").json(), fmt, PORT_COLS + ["instance_id"])


@network_app.command("delete")
def network_delete(ref: str) -> None:
    request("DELETE", f"/networks/{ref}")
    console.print(f"network {ref} deleted")
