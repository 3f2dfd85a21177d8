"""A router on its network node: a network namespace with one leg on each network it
joins, routing between them and out to the external network.

The namespace is ``nqr-<tag>``. Each leg is a veth pair: its host end (``nri-*`` on
a tenant network, ``nrg-*`` on the external network) is a port of that network's
bridge on this host; its other end (the same name with ``q`` for ``n``) is inside
the namespace with the router's address on that network. The external leg also
holds the floating IPs (so the namespace answers ARP for them), and the nat table
(``iptables-restore``, replaced whole at every apply) does the rest:

- a floating IP is 1:1 NAT: what comes in for it goes to its port's address, what
  that port sends out leaves from it;
- a port forwarding sends external-address:port to a port's address:port;
- source NAT: whatever else leaves through the external leg takes the router's
  external address.

From the external side only what a NAT rule let in (and the answers to what went
out) is forwarded. Applying a state twice changes nothing; applying a new one adds
what is missing and removes what is no longer wanted.
"""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field

from nubis.agent.overlay import BRIDGE_RE, DEVICE_RE, MAC_RE, AgentError, link, run

NAMESPACE_RE = re.compile(r"^nqr-[0-9a-f]{8}$")
HOST_END_RE = re.compile(r"^nr[gi]-[0-9a-f]{8}$")


def _interface(value: str) -> str:
    if "/" not in value:
        raise ValueError(f"an address with its prefix (10.0.0.1/24), not {value!r}")
    return str(ipaddress.IPv4Interface(value))


def _ipv4(value: str) -> str:
    return str(ipaddress.IPv4Address(value))


IPv4 = Annotated[str, AfterValidator(_ipv4)]
IPv4Interface = Annotated[str, AfterValidator(_interface)]


class Leg(BaseModel):
    """The router's leg on one network: ``address`` with its prefix (10.0.0.5/24).
    ``tunnel``: the overlay network's VXLAN device, which must be on ``bridge``
    before the leg is (a router whose networks do not yet reach the other hosts is
    not put: it would look ready and carry nothing)."""

    host_end: str = Field(pattern=HOST_END_RE.pattern)
    bridge: str = Field(pattern=BRIDGE_RE.pattern)
    address: IPv4Interface
    mac: str = Field(pattern=MAC_RE.pattern)
    mtu: int = Field(default=1500, ge=576, le=9000)
    tunnel: str | None = Field(default=None, pattern=DEVICE_RE.pattern)

    @property
    def inside(self) -> str:
        return "q" + self.host_end[1:]


class Floating(BaseModel):
    external: IPv4
    internal: IPv4


class Forward(BaseModel):
    protocol: Literal["tcp", "udp"]
    external: IPv4
    external_port: int = Field(ge=1, le=65535)
    internal: IPv4
    internal_port: int = Field(ge=1, le=65535)


class RouterState(BaseModel):
    """What the router's namespace holds."""

    gateway: Leg | None = None  # on the external network
    default_route: IPv4 | None = None  # the external network's gateway
    interfaces: list[Leg] = Field(default_factory=list, max_length=64)
    snat: bool = True
    floating: list[Floating] = Field(default_factory=list, max_length=4096)
    forwards: list[Forward] = Field(default_factory=list, max_length=4096)


def _ns(name: str, *argv: str) -> str:
    return run("ip", "netns", "exec", name, *argv)


def namespaces() -> list[str]:
    found = json.loads(run("ip", "-j", "netns", "list") or "[]")
    return sorted(n["name"] for n in found if NAMESPACE_RE.match(n.get("name", "")))


def _inside_links(name: str) -> dict[str, dict[str, Any]]:
    links = json.loads(run("ip", "-n", name, "-j", "addr", "show") or "[]")
    return {link["ifname"]: link for link in links if link.get("ifname", "").startswith("q")}


def _addresses(found: dict[str, Any]) -> set[str]:
    return {
        f"{a['local']}/{a['prefixlen']}"
        for a in found.get("addr_info", [])
        if a.get("family") == "inet"
    }


def _check_leg(leg: Leg) -> None:
    if link(leg.bridge) is None:
        raise AgentError(f"bridge {leg.bridge} does not exist on this host")
    if leg.tunnel is not None and (link(leg.tunnel) or {}).get("master") != leg.bridge:
        raise AgentError(f"the overlay {leg.tunnel} is not on bridge {leg.bridge} yet")


def _put_leg(name: str, leg: Leg, extra: list[str], have: dict[str, dict[str, Any]]) -> None:
    if leg.inside not in have or link(leg.host_end) is None:
        if leg.inside in have:
            run("ip", "-n", name, "link", "del", leg.inside)
        if link(leg.host_end) is not None:
            run("ip", "link", "del", leg.host_end)
        run("ip", "link", "add", leg.host_end, "type", "veth", "peer", "name", leg.inside,
            "netns", name)  # fmt: skip
        have[leg.inside] = {}
    run("ip", "link", "set", "dev", leg.host_end, "mtu", str(leg.mtu))
    run("ip", "link", "set", "dev", leg.host_end, "master", leg.bridge, "up")
    run("ip", "-n", name, "link", "set", "dev", leg.inside, "address", leg.mac,
        "mtu", str(leg.mtu), "up")  # fmt: skip
    want = {leg.address, *(f"{a}/32" for a in extra)}
    current = _addresses(have[leg.inside])
    for address in sorted(current - want):
        run("ip", "-n", name, "addr", "del", address, "dev", leg.inside)
    for address in sorted(want - current):
        run("ip", "-n", name, "addr", "add", address, "dev", leg.inside)


def nat_rules(state: RouterState) -> str:
    """The namespace's nat and filter tables, as ``iptables-restore`` takes them."""
    lines = ["*nat", ":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]",
             ":OUTPUT ACCEPT [0:0]", ":POSTROUTING ACCEPT [0:0]"]  # fmt: skip
    out = state.gateway.inside if state.gateway else None
    for f in state.floating:
        lines.append(f"-A PREROUTING -d {f.external}/32 -j DNAT --to-destination {f.internal}")
    for fw in state.forwards:
        lines.append(
            f"-A PREROUTING -d {fw.external}/32 -p {fw.protocol} -m {fw.protocol} "
            f"--dport {fw.external_port} -j DNAT --to-destination {fw.internal}:{fw.internal_port}"
        )
    if out is not None and state.gateway is not None:
        for f in state.floating:
            lines.append(
                f"-A POSTROUTING -s {f.internal}/32 -o {out} -j SNAT --to-source {f.external}"
            )
        if state.snat:
            source = str(ipaddress.IPv4Interface(state.gateway.address).ip)
            lines.append(f"-A POSTROUTING -o {out} -j SNAT --to-source {source}")
    lines += ["COMMIT", "*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]",
              ":OUTPUT ACCEPT [0:0]"]  # fmt: skip
    if out is not None:
        lines += [
            f"-A FORWARD -i {out} -m conntrack --ctstate RELATED,ESTABLISHED,DNAT -j ACCEPT",
            f"-A FORWARD -i {out} -j DROP",
        ]
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def apply(name: str, state: RouterState) -> None:
    """Make the host hold ``state`` for the router namespace ``name`` (idempotent)."""
    if not NAMESPACE_RE.match(name):
        raise AgentError(f"not a router namespace name: {name!r}")
    legs = [*([state.gateway] if state.gateway else []), *state.interfaces]
    for leg in legs:  # before anything is made: a refused state changes nothing
        _check_leg(leg)
    if name not in namespaces():
        run("ip", "netns", "add", name)
    run("ip", "-n", name, "link", "set", "lo", "up")
    _ns(name, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    have = _inside_links(name)
    wanted = {leg.inside for leg in legs}
    for inside in sorted(set(have) - wanted):
        run("ip", "-n", name, "link", "del", inside)  # its host end goes with it
    for leg in legs:
        extra = (
            sorted({f.external for f in state.floating} | {f.external for f in state.forwards})
            if leg is state.gateway
            else []
        )
        _put_leg(name, leg, extra, have)
    if state.gateway is not None and state.default_route:
        run("ip", "-n", name, "route", "replace", "default", "via", state.default_route)
    else:
        run("ip", "-n", name, "route", "flush", "exact", "0.0.0.0/0")
    proc = subprocess.run(
        ["ip", "netns", "exec", name, "iptables-restore"],
        input=nat_rules(state),
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise AgentError(f"iptables-restore in {name}: {proc.stderr.strip()}")


def remove(name: str) -> None:
    """The router's namespace goes, with its legs; absent: nothing to do."""
    if not NAMESPACE_RE.match(name):
        raise AgentError(f"not a router namespace name: {name!r}")
    if name not in namespaces():
        return
    for inside in _inside_links(name):
        run("ip", "-n", name, "link", "del", inside)
    run("ip", "netns", "del", name)


def describe() -> dict[str, dict[str, Any]]:
    """Every router namespace of the host: its legs' addresses and its default route."""
    out: dict[str, dict[str, Any]] = {}
    for name in namespaces():
        routes = json.loads(run("ip", "-n", name, "-j", "route", "show", "default") or "[]")
        out[name] = {
            "legs": {
                inside: sorted(_addresses(found)) for inside, found in _inside_links(name).items()
            },
            "default_route": routes[0].get("gateway") if routes else None,
        }
    return out
