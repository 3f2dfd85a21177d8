"""CLI commands for networks, security groups, ports and instances' NICs."""

from __future__ import annotations

from typing import Annotated

import typer

from nubis.cli.client import console, request, show, wait_for_task
from nubis.cli.resources import Fmt, Wait, instance_app

network_app = typer.Typer(help="Networks and their subnets", no_args_is_help=True)

NETWORK_COLS = ["name", "mode", "subnets", "bridge_name", "segment_id", "state", "id"]
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
        list[str] | None,
        typer.Option(
            help="CIDR[,gateway=IP][,pool=START-END][,dns=IP+IP] (repeatable; none: an "
            "empty network, its subnets added later with add-subnets)"
        ),
    ] = None,
    mode: Annotated[
        str,
        typer.Option(
            help="overlay (spans the cluster's hosts) | nat | isolated | bridged | vlan | "
            "external (routers' gateways and floating IPs; on --host-bridge)"
        ),
    ] = "nat",
    cluster: Annotated[str | None, typer.Option(help="default: cluster 'default'")] = None,
    host_bridge: Annotated[
        str | None, typer.Option(help="bridged, external: the host bridge to join")
    ] = None,
    host_interface: Annotated[
        str | None, typer.Option(help="vlan: the hosts' interface carrying VLANs")
    ] = None,
    segmentation_id: Annotated[int | None, typer.Option(help="vlan: the VLAN id")] = None,
    fmt: Fmt = "table",
) -> None:
    body = {
        "name": name,
        "mode": mode,
        "cluster": cluster,
        "host_bridge": host_bridge,
        "host_interface": host_interface,
        "segmentation_id": segmentation_id,
        "subnets": [parse_subnet(s) for s in subnet or []],
    }
    created = request("POST", "/networks", json=body).json()
    show(_summary(created) if fmt == "table" else created, fmt, NETWORK_COLS)


@network_app.command("add-subnets")
def network_add_subnets(
    ref: str,
    subnet: Annotated[
        list[str], typer.Option(help="CIDR[,gateway=IP][,pool=START-END][,dns=IP+IP]")
    ],
    fmt: Fmt = "table",
) -> None:
    """Give a network made without subnets its subnets (then it is defined on the hosts)."""
    body = {"subnets": [parse_subnet(s) for s in subnet]}
    changed = request("POST", f"/networks/{ref}/subnets", json=body).json()
    show(_summary(changed) if fmt == "table" else changed, fmt, NETWORK_COLS)


@network_app.command("remove-subnet")
def network_remove_subnet(ref: str, subnet_id: str) -> None:
    """Remove a network's only subnet (no ports on it): the network is empty again."""
    request("DELETE", f"/networks/{ref}/subnets/{subnet_id}")
    console.print(f"subnet {subnet_id} removed; network {ref} is empty")


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


group_app = typer.Typer(
    help="Security groups (what reaches ports, what they start)", no_args_is_help=True
)
GROUP_COLS = ["name", "description", "rules", "id"]
RULE_COLS = [
    "direction", "protocol", "port_min", "port_max", "remote_cidr", "remote_group_id", "id"
]  # fmt: skip


@group_app.command("list")
def group_list(fmt: Fmt = "table") -> None:
    page = request("GET", "/security-groups").json()
    if fmt == "table":
        for group in page["items"]:
            group["rules"] = len(group["rules"])
    show(page, fmt, GROUP_COLS)


@group_app.command("create")
def group_create(name: str, description: str = "", fmt: Fmt = "table") -> None:
    body = {"name": name, "description": description}
    created = request("POST", "/security-groups", json=body).json()
    if fmt == "table":
        created["rules"] = len(created["rules"])
    show(created, fmt, GROUP_COLS)


@group_app.command("show")
def group_show(ref: str, fmt: Fmt = "table") -> None:
    """The group's rules."""
    show(request("GET", f"/security-groups/{ref}").json()["rules"], fmt, RULE_COLS)


@group_app.command("add-rule")
def group_add_rule(
    ref: str,
    protocol: Annotated[str, typer.Option(help="tcp | udp | icmp | any")],
    port: Annotated[str | None, typer.Option(help="tcp/udp: PORT or MIN-MAX")] = None,
    remote_cidr: Annotated[
        str | None, typer.Option(help="from (egress: to) these addresses")
    ] = None,
    remote_group: Annotated[
        str | None, typer.Option(help="from (egress: to) this group's ports")
    ] = None,
    direction: Annotated[
        str, typer.Option(help="ingress (what reaches the ports) | egress (what they start)")
    ] = "ingress",
    fmt: Fmt = "table",
) -> None:
    low, _, high = (port or "").partition("-")
    body = {
        "direction": direction,
        "protocol": protocol,
        "port_min": int(low) if low else None,
        "port_max": int(high) if high else None,
        "remote_cidr": remote_cidr,
        "remote_group": remote_group,
    }
    show(request("POST", f"/security-groups/{ref}/rules", json=body).json(), fmt, RULE_COLS)


@group_app.command("delete-rule")
def group_delete_rule(ref: str, rule_id: str) -> None:
    request("DELETE", f"/security-groups/{ref}/rules/{rule_id}")
    console.print(f"rule {rule_id} deleted")


@group_app.command("delete")
def group_delete(ref: str) -> None:
    request("DELETE", f"/security-groups/{ref}")
    console.print(f"security group {ref} deleted")


port_app = typer.Typer(help="Ports (NICs): security groups and bandwidth", no_args_is_help=True)
PORT_DETAIL_COLS = PORT_COLS + ["security_groups", "bandwidth"]


def parse_rate(text: str | None) -> dict | None:
    """``AVERAGE[,PEAK[,BURST]]`` (KiB/s, KiB/s, KiB) -> a rate; None stays None."""
    if not text:
        return None
    fields = text.split(",")
    try:
        values = [int(f) if f else None for f in fields]
    except ValueError:
        raise typer.BadParameter(f"{text!r}: expected AVERAGE[,PEAK[,BURST]] in KiB/s") from None
    if len(values) > 3 or values[0] is None:
        raise typer.BadParameter(f"{text!r}: expected AVERAGE[,PEAK[,BURST]] in KiB/s")
    values += [None] * (3 - len(values))
    return dict(zip(("average", "peak", "burst"), values, strict=True))


Inbound = Annotated[
    str | None, typer.Option(help="to the guest: AVERAGE[,PEAK[,BURST]] (KiB/s, KiB)")
]
Outbound = Annotated[str | None, typer.Option(help="from the guest: AVERAGE[,,BURST]")]


@port_app.command("show")
def port_show(port_id: str, fmt: Fmt = "json") -> None:
    show(request("GET", f"/ports/{port_id}").json(), fmt, PORT_DETAIL_COLS)


@port_app.command("set-groups")
def port_set_groups(
    port_id: str,
    security_group: Annotated[list[str], typer.Option(help="the port's groups (repeatable)")],
    fmt: Fmt = "table",
) -> None:
    """Replace the port's security groups; a running NIC takes them at once."""
    body = {"security_groups": security_group}
    show(request("PUT", f"/ports/{port_id}/security-groups", json=body).json(), fmt, PORT_COLS)


@port_app.command("set-bandwidth")
def port_set_bandwidth(
    port_id: str, inbound: Inbound = None, outbound: Outbound = None, fmt: Fmt = "table"
) -> None:
    """New traffic limits (none given: unlimited), applied live."""
    body = {"inbound": parse_rate(inbound), "outbound": parse_rate(outbound)}
    shown = request("PUT", f"/ports/{port_id}/bandwidth", json=body).json()
    show(shown, fmt, PORT_DETAIL_COLS)


@instance_app.command("attach-nic")
def instance_attach_nic(
    ref: str,
    network: Annotated[str, typer.Option(help="NETWORK or NETWORK=IP")],
    security_group: Annotated[
        list[str] | None, typer.Option(help="the NIC's groups (repeatable; default: 'default')")
    ] = None,
    inbound: Inbound = None,
    outbound: Outbound = None,
    wait: Wait = False,
    fmt: Fmt = "table",
) -> None:
    """A new NIC, hot-plugged when the instance runs."""
    net, _, ip = network.partition("=")
    body: dict = {"network": net, "ip": ip or None, "security_groups": security_group}
    if inbound or outbound:
        body["bandwidth"] = {"inbound": parse_rate(inbound), "outbound": parse_rate(outbound)}
    port = request("POST", f"/instances/{ref}/ports", json=body).json()
    if wait:
        wait_for_task(port["task_id"])
        port = request("GET", f"/ports/{port['id']}").json()
    show(port, fmt, PORT_COLS)


@instance_app.command("detach-nic")
def instance_detach_nic(ref: str, port_id: str, wait: Wait = False) -> None:
    """Unplug the NIC and free its address."""
    task = request("DELETE", f"/instances/{ref}/ports/{port_id}").json()
    if wait:
        wait_for_task(task["task_id"])
    console.print(f"port {port_id} detached" if wait else f"task {task['task_id']}")
