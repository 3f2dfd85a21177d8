"""IP address management: checking a subnet's shape, choosing a port's address and
MAC. Pure functions over ``ipaddress``; the database's unique constraints are what
make an address impossible to hand out twice (see ``ports``)."""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network

from nubis.services.core.errors import BadRequest

MIN_PREFIX, MAX_PREFIX = 8, 29
MAX_DNS = 3
# locally administered, unicast ("NB" after the 02): never a vendor's MAC
MAC_PREFIX = "02:4e:42"


@dataclass(frozen=True)
class SubnetRequest:
    cidr: str
    name: str | None = None
    gateway: str | None = None
    dns_servers: list[str] | None = None
    pool_start: str | None = None
    pool_end: str | None = None


@dataclass(frozen=True)
class SubnetPlan:
    """A checked subnet: its addresses as ``ipaddress`` objects."""

    network: IPv4Network
    gateway: IPv4Address | None
    pool_start: IPv4Address
    pool_end: IPv4Address
    dns_servers: list[IPv4Address] = field(default_factory=list)


def _address(value: str, what: str) -> IPv4Address:
    try:
        return IPv4Address(value)
    except ValueError:
        raise BadRequest(f"{what} {value!r} is not an IPv4 address") from None


def parse_cidr(cidr: str) -> IPv4Network:
    try:
        net = ipaddress.ip_network(cidr, strict=True)
    except ValueError as exc:
        raise BadRequest(f"cidr {cidr!r} is not a network address with a prefix: {exc}") from None
    if not isinstance(net, IPv4Network):
        raise BadRequest("only IPv4 subnets are supported")
    if not MIN_PREFIX <= net.prefixlen <= MAX_PREFIX:
        raise BadRequest(f"cidr {cidr!r}: the prefix must be /{MIN_PREFIX} to /{MAX_PREFIX}")
    return net


def _host_of(net: IPv4Network, addr: IPv4Address, what: str) -> IPv4Address:
    if addr not in net or addr in (net.network_address, net.broadcast_address):
        raise BadRequest(f"{what} {addr} is not a host address of {net}")
    return addr


def plan_subnet(req: SubnetRequest, needs_gateway: bool) -> SubnetPlan:
    """Check a requested subnet; fill in the defaults (the first host address as the
    gateway, the rest of the hosts as the pool, the gateway as the DNS server)."""
    net = parse_cidr(req.cidr)
    first, last = net.network_address + 1, net.broadcast_address - 1
    gateway: IPv4Address | None = None
    if req.gateway is not None:
        gateway = _host_of(net, _address(req.gateway, "gateway"), "gateway")
    elif needs_gateway:
        gateway = first
    start = _address(req.pool_start, "pool_start") if req.pool_start else None
    end = _address(req.pool_end, "pool_end") if req.pool_end else None
    if start is not None:
        _host_of(net, start, "pool_start")
    if end is not None:
        _host_of(net, end, "pool_end")
    start = start or (first + 1 if gateway == first else first)
    end = end or (last - 1 if gateway == last else last)
    if start > end:
        raise BadRequest(f"the allocation pool {start}-{end} is empty")
    if gateway is not None and (req.pool_start or req.pool_end) and start <= gateway <= end:
        raise BadRequest(f"the gateway {gateway} is inside the allocation pool {start}-{end}")
    dns = [_address(d, "dns server") for d in (req.dns_servers or [])]
    if len(dns) > MAX_DNS:
        raise BadRequest(f"at most {MAX_DNS} DNS servers")
    if req.dns_servers is None and gateway is not None and needs_gateway:
        dns = [gateway]  # the host's dnsmasq answers DNS on a nat or isolated network
    return SubnetPlan(net, gateway, start, end, dns)


def check_disjoint(networks: Iterable[tuple[str, str]]) -> None:
    """(label, cidr) pairs must not overlap one another."""
    seen: list[tuple[str, IPv4Network]] = []
    for label, cidr in networks:
        net = IPv4Network(cidr)
        for other_label, other in seen:
            if net.overlaps(other):
                raise BadRequest(f"subnet {cidr} overlaps {other} ({other_label})")
        seen.append((label, net))


def pool_addresses(start: str, end: str) -> Iterator[IPv4Address]:
    addr, last = IPv4Address(start), IPv4Address(end)
    while addr <= last:
        yield addr
        addr += 1


def first_free(start: str, end: str, taken: set[str]) -> str | None:
    """The lowest address of the pool not in ``taken`` (None: the pool is full)."""
    for addr in pool_addresses(start, end):
        if str(addr) not in taken:
            return str(addr)
    return None


def check_fixed_ip(ip: str, cidr: str, gateway: str | None) -> str:
    """A user-chosen address must be a host address of the subnet, not the gateway;
    it may lie outside the allocation pool (as with OpenStack's fixed IPs)."""
    addr = _host_of(IPv4Network(cidr), _address(ip, "ip"), "ip")
    if gateway is not None and addr == IPv4Address(gateway):
        raise BadRequest(f"{ip} is the subnet's gateway")
    return str(addr)


def random_mac() -> str:
    tail = secrets.token_bytes(3)
    return MAC_PREFIX + "".join(f":{b:02x}" for b in tail)
