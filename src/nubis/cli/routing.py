"""CLI commands for routers, floating IPs and port forwardings."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from nubis.cli.client import console, request, show
from nubis.cli.resources import Fmt

router_app = typer.Typer(
    help="Routers: overlay networks to each other and out", no_args_is_help=True
)
floating_app = typer.Typer(help="Floating IPs and their port forwardings", no_args_is_help=True)

ROUTER_COLS = ["name", "host_name", "gateway_ip", "snat", "interfaces", "state", "id"]
FLOATING_COLS = ["address", "fixed_ip", "fixed_port_id", "router_id", "id"]
FORWARD_COLS = ["protocol", "external_port", "internal_ip", "internal_port", "port_id", "id"]


def _summary(found: dict[str, Any]) -> dict[str, Any]:
    found["interfaces"] = ", ".join(p["ip"] for p in found.get("interfaces", []))
    return found


@router_app.command("list")
def router_list(fmt: Fmt = "table") -> None:
    page = request("GET", "/routers").json()
    if fmt == "table":
        page["items"] = [_summary(r) for r in page["items"]]
    show(page, fmt, ROUTER_COLS)


@router_app.command("create")
def router_create(
    name: str,
    external_network: Annotated[
        str | None, typer.Option(help="its external gateway (an external network)")
    ] = None,
    snat: Annotated[bool, typer.Option(help="source NAT out through the gateway")] = True,
    cluster: Annotated[str | None, typer.Option(help="default: cluster 'default'")] = None,
    host: Annotated[
        str | None, typer.Option(help="its network node (system administrators)")
    ] = None,
    fmt: Fmt = "table",
) -> None:
    body = {
        "name": name,
        "external_network": external_network,
        "snat": snat,
        "cluster": cluster,
        "host": host,
    }
    made = request("POST", "/routers", json=body).json()
    show(_summary(made) if fmt == "table" else made, fmt, ROUTER_COLS)


@router_app.command("show")
def router_show(ref: str, fmt: Fmt = "table") -> None:
    found = request("GET", f"/routers/{ref}").json()
    show(_summary(found) if fmt == "table" else found, fmt, ROUTER_COLS)


@router_app.command("delete")
def router_delete(ref: str) -> None:
    request("DELETE", f"/routers/{ref}")
    console.print(f"router {ref} deleted")


@router_app.command("set-gateway")
def router_set_gateway(
    ref: str,
    network: Annotated[str, typer.Argument(help="an external network")],
    snat: Annotated[bool, typer.Option(help="source NAT out through the gateway")] = True,
    fmt: Fmt = "table",
) -> None:
    found = request("PUT", f"/routers/{ref}/gateway", json={"network": network, "snat": snat})
    show(_summary(found.json()) if fmt == "table" else found.json(), fmt, ROUTER_COLS)


@router_app.command("clear-gateway")
def router_clear_gateway(ref: str, fmt: Fmt = "table") -> None:
    found = request("DELETE", f"/routers/{ref}/gateway").json()
    show(_summary(found) if fmt == "table" else found, fmt, ROUTER_COLS)


@router_app.command("add-interface")
def router_add_interface(
    ref: str, network: Annotated[str, typer.Argument(help="an overlay network")]
) -> None:
    port = request("POST", f"/routers/{ref}/interfaces", json={"network": network}).json()
    console.print(f"router {ref} is {port['ip']} on network {network}")


@router_app.command("remove-interface")
def router_remove_interface(ref: str, network: str) -> None:
    request("DELETE", f"/routers/{ref}/interfaces/{network}")
    console.print(f"router {ref} left network {network}")


@floating_app.command("list")
def floating_list(fmt: Fmt = "table") -> None:
    show(request("GET", "/floating-ips").json(), fmt, FLOATING_COLS)


@floating_app.command("create")
def floating_create(
    network: Annotated[str, typer.Argument(help="the external network")],
    port: Annotated[str | None, typer.Option(help="associate with this port (id)")] = None,
    address: Annotated[str | None, typer.Option(help="this address")] = None,
    fmt: Fmt = "table",
) -> None:
    body = {"network": network, "port": port, "address": address}
    show(request("POST", "/floating-ips", json=body).json(), fmt, FLOATING_COLS)


@floating_app.command("associate")
def floating_associate(
    ref: Annotated[str, typer.Argument(help="the floating IP (id or address)")],
    port: Annotated[str, typer.Argument(help="the port (id)")],
    fmt: Fmt = "table",
) -> None:
    show(
        request("PUT", f"/floating-ips/{ref}/port", json={"port": port}).json(), fmt, FLOATING_COLS
    )


@floating_app.command("disassociate")
def floating_disassociate(ref: str, fmt: Fmt = "table") -> None:
    show(
        request("PUT", f"/floating-ips/{ref}/port", json={"port": None}).json(), fmt, FLOATING_COLS
    )


@floating_app.command("delete")
def floating_delete(ref: str) -> None:
    request("DELETE", f"/floating-ips/{ref}")
    console.print(f"floating IP {ref} deleted")


@floating_app.command("forward")
def floating_forward(
    ref: Annotated[str, typer.Argument(help="the floating IP (id or address)")],
    external_port: int,
    port: Annotated[str, typer.Argument(help="the port (id) traffic goes to")],
    internal_port: int,
    protocol: Annotated[str, typer.Option(help="tcp | udp")] = "tcp",
    fmt: Fmt = "table",
) -> None:
    body = {
        "protocol": protocol,
        "external_port": external_port,
        "port": port,
        "internal_port": internal_port,
    }
    made = request("POST", f"/floating-ips/{ref}/port-forwardings", json=body).json()
    show(made, fmt, FORWARD_COLS)


@floating_app.command("forwards")
def floating_forwards(ref: str, fmt: Fmt = "table") -> None:
    show(request("GET", f"/floating-ips/{ref}/port-forwardings").json(), fmt, FORWARD_COLS)


@floating_app.command("unforward")
def floating_unforward(ref: str, forward_id: str) -> None:
    request("DELETE", f"/floating-ips/{ref}/port-forwardings/{forward_id}")
    console.print(f"port forwarding {forward_id} deleted")
