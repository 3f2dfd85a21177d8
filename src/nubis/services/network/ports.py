"""Ports: an instance's NICs, each a MAC and a fixed IP of a subnet.

An address is chosen as the lowest free one of the subnet's pool and inserted in a
savepoint: the unique constraints (subnet, ip) and (mac) reject a second holder,
so two requests racing for one address cannot both win; the loser takes the next.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nubis.db.models import (
    FloatingIP,
    Host,
    HostStatus,
    Instance,
    Network,
    NetworkState,
    Port,
    PortForwarding,
    PortSecurityGroup,
    Subnet,
)
from nubis.db.session import Database
from nubis.drivers.errors import DriverError
from nubis.drivers.libvirt.base import HostRef
from nubis.drivers.libvirt.domain_xml import InterfaceSpec
from nubis.drivers.libvirt.networks import NetworkDriver, Reservation
from nubis.drivers.libvirt.nwfilters import FilterDriver, port_filter_xml
from nubis.services.core.errors import BadRequest, Conflict
from nubis.services.core.lookup import get_by_id_or_name
from nubis.services.core.principal import Principal
from nubis.services.inventory.hosts import HostService
from nubis.services.network import security_groups
from nubis.services.network.ipam import check_fixed_ip, first_free, random_mac
from nubis.services.network.networks import scope_filter, subnets_of
from nubis.services.network.overlays import OverlayService
from nubis.services.network.qos import rates
from nubis.services.network.security_groups import SecurityGroupService
from nubis.services.network.specs import EXTERNAL, spec_of

MAX_NICS = 8
ATTEMPTS = 20

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NicRequest:
    network: str
    ip: str | None = None
    security_groups: list[str] | None = None  # None: the project's default group
    bandwidth: dict | None = None  # None: the flavor's limits (see services/qos.py)


DEFAULT_NETWORK = "default"


def default_nics(session: Session, principal: Principal) -> list[NicRequest]:
    """The NICs of an instance made without a word about networks: one on the
    project's active network named ``default`` (the first run makes one for project
    admin), else none."""
    found = session.scalar(
        select(Network.id).where(
            Network.project_id == principal.project_id,
            Network.name == DEFAULT_NETWORK,
            Network.state == NetworkState.ACTIVE,
        )
    )
    return [NicRequest(found)] if found else []


def resolve_networks(
    session: Session, principal: Principal, nics: list[NicRequest]
) -> list[Network]:
    """The networks the NICs ask for: the caller's, active, all of one cluster."""
    if len(nics) > MAX_NICS:
        raise BadRequest(f"at most {MAX_NICS} NICs per instance")
    networks = []
    for nic in nics:
        network = get_by_id_or_name(
            session, Network, nic.network, "network", project_id=principal.project_id
        )
        if network.mode == EXTERNAL:
            raise BadRequest(
                f"network {network.name!r} is external: instances reach it through a "
                "router (its source NAT, floating IPs and port forwardings)"
            )
        if network.state == NetworkState.EMPTY:
            raise Conflict(f"network {network.name!r} has no subnet yet: add one first")
        if network.state != NetworkState.ACTIVE:
            raise Conflict(f"network {network.name!r} is {network.state}, not active")
        networks.append(network)
    if len({n.cluster_id for n in networks}) > 1:
        raise BadRequest("the NICs' networks are in different clusters")
    return networks


def _subnet_for(session: Session, network: Network, ip: str | None) -> Subnet:
    subnets = subnets_of(session, network.id)
    if ip is None:
        return subnets[0]
    for subnet in subnets:
        try:
            if IPv4Address(ip) in IPv4Network(subnet.cidr):
                return subnet
        except ValueError:
            raise BadRequest(f"ip {ip!r} is not an IPv4 address") from None
    raise BadRequest(f"{ip} is in no subnet of network {network.name!r}")


def allocate(
    session: Session,
    project_id: str,
    network: Network,
    instance_id: str | None,
    ip: str | None = None,
    position: int = 0,
) -> Port:
    """A port on the network with ``ip`` (if free) or the lowest free address."""
    subnet = _subnet_for(session, network, ip)
    if ip is not None:
        ip = check_fixed_ip(ip, subnet.cidr, subnet.gateway)
    for _attempt in range(ATTEMPTS):
        taken = set(session.scalars(select(Port.ip).where(Port.subnet_id == subnet.id)))
        if subnet.gateway:
            taken.add(subnet.gateway)
        if ip is not None and ip in taken:
            raise Conflict(f"{ip} is already in use on network {network.name!r}")
        address = ip or first_free(subnet.pool_start, subnet.pool_end, taken)
        if address is None:
            raise Conflict(
                f"subnet {subnet.cidr} of network {network.name!r} has no free address left"
            )
        port = Port(
            project_id=project_id,
            network_id=network.id,
            subnet_id=subnet.id,
            instance_id=instance_id,
            mac=random_mac(),
            ip=address,
            position=position,
            status="attaching",
        )
        try:
            with session.begin_nested():
                session.add(port)
                session.flush()
            return port
        except IntegrityError:
            continue  # someone took the address (or, rarely, the MAC): try again
    raise Conflict(f"could not allocate an address on network {network.name!r}; try again")


def instance_ports(session: Session, instance_id: str) -> list[Port]:
    return list(
        session.scalars(
            select(Port).where(Port.instance_id == instance_id).order_by(Port.position, Port.id)
        )
    )


def port_filter_name(port_id: str) -> str:
    return f"nubis-port-{port_id}"


def interfaces(session: Session, instance_id: str) -> tuple[InterfaceSpec, ...]:
    """The instance's NICs in its domain, in port order, each behind its port's
    filter (its own MAC and IP only, its security groups)."""
    return tuple(interface_of(session, port) for port in instance_ports(session, instance_id))


def interface_of(session: Session, port: Port) -> InterfaceSpec:
    network = session.get(Network, port.network_id)
    assert network is not None
    inbound, outbound = rates(port.bandwidth)
    return InterfaceSpec(
        mac=port.mac,
        network=network.libvirt_name,
        filter=port_filter_name(port.id),
        filter_params=(("IP", port.ip),),
        inbound=inbound,
        outbound=outbound,
    )


def port_groups(session: Session, port_ids: list[str]) -> set[str]:
    if not port_ids:
        return set()
    return set(
        session.scalars(
            select(PortSecurityGroup.group_id).where(PortSecurityGroup.port_id.in_(port_ids))
        )
    )


class PortPlumbing:
    """The host side of ports: the instance's networks defined on its host, the DHCP
    reservations that give each port its address there, and the ports' filters."""

    def __init__(
        self,
        db: Database,
        driver: NetworkDriver,
        filters: FilterDriver,
        groups: SecurityGroupService,
        overlays: OverlayService,
        routers: Callable[[list[str]], None] | None = None,
    ) -> None:
        self.db = db
        self.driver = driver
        self.filters = filters
        self.groups = groups
        self.overlays = overlays
        self.routers = routers  # puts again the routers of the networks given

    def left(self, network_ids: list[str]) -> None:
        """Ports of these networks are gone: the overlays' forwarding tables and the
        routers (floating IPs and port forwardings that reached them) follow."""
        self.overlays.sync_networks(network_ids)
        if self.routers is not None:
            self.routers(network_ids)

    def prepare(self, ref: HostRef, instance_id: str) -> None:
        """Before the instance runs on a host: its networks, reservations and filters
        there; other groups' rules naming its groups learn its addresses."""
        with self.db.begin() as s:
            ports = instance_ports(s, instance_id)
            group_ids = port_groups(s, [p.id for p in ports])
            group_filters = self.groups.filters_for(s, group_ids)
            work = []
            for port in ports:
                network = s.get(Network, port.network_id)
                subnet = s.get(Subnet, port.subnet_id)
                assert network is not None and subnet is not None
                reservation = Reservation(port.mac, port.ip) if subnet.dhcp else None
                port_filter = port_filter_xml(
                    port_filter_name(port.id),
                    port.id,
                    network.scope_filter_name,
                    security_groups.port_group_filters(s, port.id),
                )
                work.append(
                    (spec_of(s, network), reservation, scope_filter(s, network), port_filter)
                )
        for _name, xml in group_filters:
            self.filters.define(ref, xml)
        for spec, reservation, scope, port_filter in work:
            self.driver.ensure_network(ref, spec)
            if reservation is not None:
                self.driver.reserve(ref, spec.name, reservation)
            self.filters.define(ref, scope)
            self.filters.define(ref, port_filter)
        if work:
            self.guard(ref)
        self.groups.push(group_ids, strict=False)
        # overlay networks: every host learns where the ports are (their names too)
        self.overlays.sync_instance(instance_id)

    def guard(self, ref: HostRef) -> None:
        """Before libvirt applies a NIC's filter on the host: the guard that keeps every
        guest's filters in force while it does (``agent/nwfilter_guard.py``). A host
        whose agent does not answer keeps libvirt's own ordering (a warning says so)."""
        with self.db.begin() as s:
            host = s.scalar(select(Host).where(Host.uri == ref.uri))
            agent = self.overlays.hosts.agent(host) if host is not None else None
        if agent is None:
            if not ref.uri.startswith("test:"):  # libvirt's test driver filters nothing
                log.warning("%s has no network agent: its packet filters have no guard", ref.uri)
            return
        try:
            self.overlays.agents.guard_filters(agent)
        except DriverError as exc:
            log.warning("packet filter guard not checked on %s: %s", ref.uri, exc)

    def unplug(self, refs: list[HostRef], gone: list[PortOnHosts]) -> None:
        """The hosts forget the ports: their reservations and filters leave the hosts
        that answer (a stale reservation elsewhere is replaced when its address is
        handed out again). Idempotent; outside any transaction."""
        for ref in refs:
            for port in gone:
                try:
                    if port.network is not None:
                        res = Reservation(port.mac, port.ip)
                        self.driver.unreserve(ref, port.network, res)
                    self.filters.remove(ref, port_filter_name(port.port_id))
                except DriverError:
                    continue

    @staticmethod
    def forget(session: Session, port: Port) -> set[str]:
        """The port's group memberships, the floating IP pointing at it and the port
        forwardings to it go (before the port's row; ``left`` then puts the routers
        again); the groups it was in are returned (their rules forget its address:
        ``groups.push``)."""
        groups = port_groups(session, [port.id])
        for member in session.scalars(
            select(PortSecurityGroup).where(PortSecurityGroup.port_id == port.id)
        ):
            session.delete(member)
        for fip in session.scalars(select(FloatingIP).where(FloatingIP.fixed_port_id == port.id)):
            fip.fixed_port_id = None  # the address stays the project's, reaching nothing
        for forward in session.scalars(
            select(PortForwarding).where(PortForwarding.port_id == port.id)
        ):
            session.delete(forward)
        return groups


@dataclass(frozen=True)
class PortOnHosts:
    """What the hosts hold of a port: its DHCP reservation and its filter."""

    port_id: str
    mac: str
    ip: str
    network: str | None  # the libvirt network
    network_id: str

    @classmethod
    def of(cls, session: Session, port: Port) -> PortOnHosts:
        network = session.get(Network, port.network_id)
        name = network.libvirt_name if network else None
        return cls(port.id, port.mac, port.ip, name, port.network_id)


def cluster_refs(session: Session, instance: Instance, hosts: HostService) -> list[HostRef]:
    """Every reachable host of the instance's cluster (ports' reservations may be on
    any host the instance ever ran on)."""
    host = session.get(Host, instance.host_id) if instance.host_id else None
    if host is None:
        return []
    peers = session.scalars(select(Host).where(Host.cluster_id == host.cluster_id)).all()
    return [hosts.ref(h) for h in peers if h.state == HostStatus.UP] or [hosts.ref(host)]
