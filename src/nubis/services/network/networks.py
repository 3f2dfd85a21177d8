"""Networks of a cluster and their subnets: defined as libvirt networks on every host
of the cluster, all or none (as storage pools are).

The rows are written as ``creating``; the network is defined on each host that is
up; if one refuses, it is removed from the others and the rows deleted. A network
a dead process left ``creating`` is undone at start-up.

An ``overlay`` network spans the hosts of its cluster (``overlays``): after the
libvirt networks, each host's VXLAN device is put by its network agent, within the
same all-or-none rule, and removed with the network.

A network may be made without subnets (``empty``, as Neutron makes them): nothing is
defined on the hosts until its subnets are added, which they can be only while it
has none (libvirt defines a network with its addresses). Adding them is written as
``adding`` and undone the same way (the network stays, ``empty``); removing the
last subnet of a network without ports makes it ``empty`` again.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nubis.db.models import (
    Cluster,
    Host,
    HostStatus,
    Network,
    NetworkState,
    Port,
    Subnet,
    new_id,
)
from nubis.db.models.routing import ROUTER_INTERFACE
from nubis.db.session import Database
from nubis.drivers.errors import DriverError
from nubis.drivers.libvirt.base import HostRef
from nubis.drivers.libvirt.networks import MODES, NetworkDriver
from nubis.drivers.libvirt.nwfilters import FilterDriver, scope_filter_xml
from nubis.services.core.errors import BadRequest, Conflict, Forbidden, NotFoundError, Unavailable
from nubis.services.core.lookup import get_by_id_or_name, validate_name
from nubis.services.core.principal import Principal
from nubis.services.identity import policy, quotas
from nubis.services.inventory import topology
from nubis.services.inventory.hosts import HostService, call_each
from nubis.services.network import vlans
from nubis.services.network.ipam import SubnetRequest, check_disjoint, plan_subnet
from nubis.services.network.overlays import FIRST_VNI, LAST_VNI, OverlayService, tunnel_address
from nubis.services.network.specs import EXTERNAL, MODE, spec_of
from nubis.tasks.in_flight import InFlight

log = logging.getLogger(__name__)
IFNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
MAX_SUBNETS = 4
ALL_MODES = (*MODES, EXTERNAL)
KIND = "network"  # the lease of an operation in flight: network:<id>
BUSY = "another operation on the network is under way; try again"


@dataclass(frozen=True)
class NetworkRequest:
    name: str
    mode: str
    subnets: list[SubnetRequest] = field(default_factory=list)
    cluster: str | None = None
    host_bridge: str | None = None
    host_interface: str | None = None  # vlan
    segmentation_id: int | None = None  # vlan


def scope_filter(session: Session, network: Network) -> str:
    """The filter keeping the network's ports out of the cluster's other networks. A
    network a router joins reaches through it the router's other networks and the
    world beyond its gateway, but never the hosts' own addresses."""
    rows = session.execute(
        select(Subnet.network_id, Subnet.cidr, Network.mode)
        .join(Network, Network.id == Subnet.network_id)
        .where(Network.cluster_id == network.cluster_id)
    ).all()
    own = [cidr for net_id, cidr, _mode in rows if net_id == network.id]
    peers = routed_peers(session, network.id)
    if peers:
        others = [c for net_id, c, mode in rows if net_id not in peers and mode != EXTERNAL]
        others += [f"{a}/32" for h in hosts_of(session, network) if (a := tunnel_address(h))]
        return scope_filter_xml(network.scope_filter_name, network.id, own, others, False)
    others = [cidr for net_id, cidr, _mode in rows if net_id != network.id]
    return scope_filter_xml(
        network.scope_filter_name, network.id, own, others, network.mode in ("isolated", "overlay")
    )


def routed_peers(session: Session, network_id: str) -> set[str]:
    """The networks of the router the network has a leg on, itself included (none:
    not routed)."""
    router_ids = select(Port.router_id).where(
        Port.network_id == network_id, Port.device_owner == ROUTER_INTERFACE
    )
    return set(
        session.scalars(
            select(Port.network_id).where(
                Port.router_id.in_(router_ids), Port.device_owner == ROUTER_INTERFACE
            )
        )
    )


def hosts_of(session: Session, network: Network) -> list[Host]:
    return list(session.scalars(select(Host).where(Host.cluster_id == network.cluster_id)))


def subnets_of(session: Session, network_id: str) -> list[Subnet]:
    return list(
        session.scalars(
            select(Subnet).where(Subnet.network_id == network_id).order_by(Subnet.position)
        )
    )


def _validate(
    session: Session, principal: Principal, req: NetworkRequest, hosts: HostService
) -> Cluster:
    validate_name(req.name, "network")
    if req.mode not in ALL_MODES:
        raise BadRequest(f"mode must be one of {', '.join(ALL_MODES)}")
    if req.mode in ("bridged", EXTERNAL):
        if not req.host_bridge or not IFNAME_RE.match(req.host_bridge):
            raise BadRequest(
                f"a{'n' if req.mode == EXTERNAL else ''} {req.mode} network needs host_bridge: "
                "the name of a host bridge"
            )
        if policy.SYSTEM_ADMIN not in principal.roles:
            raise Forbidden(f"{req.mode} networks on a host's bridge are for system administrators")
        if req.mode == EXTERNAL and len(req.subnets) > 1:
            raise BadRequest("an external network has one subnet")
    elif req.host_bridge:
        raise BadRequest(f"a {req.mode} network makes its own bridge: give no host_bridge")
    if req.mode == vlans.MODE:
        if not req.host_interface or not IFNAME_RE.match(req.host_interface):
            raise BadRequest("a vlan network needs host_interface: the host NIC carrying VLANs")
        if req.segmentation_id is None or not 1 <= req.segmentation_id <= 4094:
            raise BadRequest("a vlan network needs segmentation_id: its VLAN id, 1 to 4094")
        if policy.SYSTEM_ADMIN not in principal.roles:
            raise Forbidden("VLAN provider networks are for system administrators")
    elif req.host_interface or req.segmentation_id is not None:
        raise BadRequest("host_interface and segmentation_id are for vlan networks only")
    if len(req.subnets) > MAX_SUBNETS:
        raise BadRequest(f"a network has at most {MAX_SUBNETS} subnets")
    exists = session.scalar(
        select(Network).where(Network.project_id == principal.project_id, Network.name == req.name)
    )
    if exists is not None:
        raise Conflict(f"a network named {req.name!r} already exists")
    cluster = get_by_id_or_name(session, Cluster, req.cluster or topology.DEFAULT, "cluster")
    if req.mode == "overlay":
        OverlayService.check_cluster(session, hosts, cluster.id)
    if req.mode == vlans.MODE and req.segmentation_id is not None:
        vlans.check_free(session, cluster.id, req.segmentation_id)
    return cluster


def _check_overlaps(session: Session, cluster: Cluster, cidrs: list[str]) -> None:
    """The hosts of a cluster route every nat and isolated subnet: none may overlap."""
    check_disjoint((f"subnet {i + 1} of the request", c) for i, c in enumerate(cidrs))
    existing = session.execute(
        select(Network.name, Subnet.cidr)
        .join(Subnet, Subnet.network_id == Network.id)
        .where(Network.cluster_id == cluster.id)
    ).all()
    for cidr in cidrs:
        try:
            check_disjoint(
                [*((f"network {name!r}", other) for name, other in existing), ("", cidr)]
            )
        except BadRequest as exc:
            raise Conflict(exc.message) from None


def _add_subnets(session: Session, network: Network, subnets: list[SubnetRequest]) -> None:
    """Check and add a network's subnets (in the caller's transaction)."""
    needs_gateway = network.mode not in ("bridged", vlans.MODE, EXTERNAL)
    plans = [plan_subnet(sub, needs_gateway) for sub in subnets]
    cluster = session.get(Cluster, network.cluster_id)
    assert cluster is not None
    _check_overlaps(session, cluster, [str(p.network) for p in plans])
    for position, (plan, sub) in enumerate(zip(plans, subnets, strict=True)):
        session.add(
            Subnet(
                network_id=network.id,
                name=sub.name,
                cidr=str(plan.network),
                gateway=str(plan.gateway) if plan.gateway else None,
                dns_servers=[str(d) for d in plan.dns_servers],
                pool_start=str(plan.pool_start),
                pool_end=str(plan.pool_end),
                # libvirt's dnsmasq serves one subnet of a network: the first
                dhcp=needs_gateway and position == 0,
                position=position,
            )
        )
    session.flush()


def _refuse_with_ports(session: Session, network: Network) -> None:
    legs = session.scalar(
        select(func.count()).where(Port.network_id == network.id, Port.device_owner.is_not(None))
    )
    if legs:
        raise Conflict(
            f"network {network.name!r} still has {legs} router leg(s) or floating IP(s): "
            "remove the router interfaces, gateways and floating IPs on it first"
        )
    count = session.scalar(select(func.count()).where(Port.network_id == network.id)) or 0
    if count:
        raise Conflict(
            f"network {network.name!r} still has {count} port(s); "
            "detach them or delete their instances first"
        )


class NetworkService:
    def __init__(
        self,
        db: Database,
        driver: NetworkDriver,
        filters: FilterDriver,
        hosts: HostService,
        overlays: OverlayService,
        vlan_service: vlans.VlanService,
        in_flight: InFlight,
    ) -> None:
        self.in_flight = in_flight
        self.db = db
        self.driver = driver
        self.filters = filters
        self.hosts = hosts
        self.overlays = overlays
        self.vlans = vlan_service

    def push_scopes(self, cluster_id: str) -> None:
        """The cluster's networks changed: every network's scope filter is defined
        again where it exists (running NICs take it at once)."""
        with self.db.begin() as s:
            networks = s.scalars(select(Network).where(Network.cluster_id == cluster_id)).all()
            filters = [(n.scope_filter_name, scope_filter(s, n)) for n in networks]
            refs = [
                self.hosts.ref(h)
                for h in s.scalars(select(Host).where(Host.cluster_id == cluster_id))
                if h.state == HostStatus.UP
            ]
        for ref in refs:
            for name, xml in filters:
                try:
                    self.filters.redefine_if_present(ref, name, xml)
                except DriverError as exc:
                    log.warning("could not update filter %s on %s: %s", name, ref.uri, exc)

    def create(self, principal: Principal, req: NetworkRequest) -> Network:
        if req.mode == vlans.MODE:  # can every host carry VLANs? (asked outside a transaction)
            with self.db.read() as s:
                cluster = _validate(s, principal, req, self.hosts)
                targets = vlans.hosts_of_cluster(s, self.hosts, cluster.id)
            self.vlans.check_support(targets)
        network_id = new_id()
        with self.in_flight.running(KIND, network_id, Conflict(BUSY)):
            with self.db.begin() as s:
                cluster = _validate(s, principal, req, self.hosts)
                quotas.claim(s, principal.project_id, {"networks": 1})
                network = self._insert(s, principal, req, cluster, network_id)
                if not req.subnets:
                    network.state = NetworkState.EMPTY  # nothing to define on the hosts yet
                    return network
                _add_subnets(s, network, req.subnets)
            return self._define_everywhere(network_id, self._undo)

    @contextmanager
    def _operation(self, principal: Principal, ref: str) -> Iterator[str]:
        """The network's id, its operation's lease held (``InFlight``)."""
        with self.db.read() as s:
            network_id = self.get(s, principal, ref).id
        with self.in_flight.running(KIND, network_id, Conflict(BUSY)):
            yield network_id

    def add_subnets(self, principal: Principal, ref: str, subnets: list[SubnetRequest]) -> Network:
        """Give an ``empty`` network its subnets and define it on the hosts."""
        with self._operation(principal, ref) as network_id:
            with self.db.begin() as s:
                network = self.get(s, principal, network_id)
                if network.state != NetworkState.EMPTY:
                    raise Conflict(
                        f"network {network.name!r} already has its subnets: subnets are added "
                        "only to a network that has none yet (make another network)"
                    )
                if not 1 <= len(subnets) <= MAX_SUBNETS:
                    raise BadRequest(f"a network has 1 to {MAX_SUBNETS} subnets")
                _add_subnets(s, network, subnets)
                network.state = NetworkState.ADDING
            return self._define_everywhere(network_id, self._empty)

    def remove_subnet(self, principal: Principal, ref: str, subnet_id: str) -> Network:
        """Remove a network's subnet: only its last one, while no port uses it (the
        network is then ``empty``, defined on no host)."""
        with self._operation(principal, ref) as network_id:
            return self._remove_subnet(principal, network_id, subnet_id)

    def _remove_subnet(self, principal: Principal, ref: str, subnet_id: str) -> Network:
        with self.db.begin() as s:
            network = self.get(s, principal, ref)
            subnets = subnets_of(s, network.id)
            if subnet_id not in [sub.id for sub in subnets]:
                raise NotFoundError(f"network {network.name!r} has no subnet {subnet_id!r}")
            if len(subnets) > 1:
                raise Conflict(
                    f"network {network.name!r} has {len(subnets)} subnets: its subnets are "
                    "removed together with it (delete the network)"
                )
            if network.state not in (NetworkState.ACTIVE, NetworkState.ERROR):
                raise Conflict(f"network {network.name!r} is {network.state}")
            _refuse_with_ports(s, network)
            network.state = NetworkState.ADDING  # undone below, or at start-up if we die meanwhile
            network_id, refs = network.id, [self.hosts.ref(h) for h in hosts_of(s, network)]
        self._empty(network_id, refs)
        with self.db.begin() as s:
            network = s.get(Network, network_id)
            assert network is not None
        self.push_scopes(network.cluster_id)
        return network

    def _define_everywhere(
        self, network_id: str, undo: Callable[[str, list[HostRef]], None]
    ) -> Network:
        """Define the network on every host of its cluster that is up, then mark it
        ``active``; if one refuses, ``undo`` what was done and raise. An external
        network has nothing on the hosts (its routers' legs join its host bridge)."""
        with self.db.begin() as s:
            network = s.get(Network, network_id)
            assert network is not None
            if network.mode == EXTERNAL:
                network.state = NetworkState.ACTIVE
                s.flush()
                s.expunge(network)
                return network
            spec = spec_of(s, network)
            targets = [
                (h.name, self.hosts.ref(h), self.hosts.agent(h))
                for h in hosts_of(s, network)
                if h.state == HostStatus.UP
            ]
            parts = self.overlays.desired(s, network, spec) if network.segment_id else []
            s.expunge(network)
        if not targets:
            undo(network_id, [])
            raise Conflict("no host of the cluster is up: the network cannot be defined anywhere")
        attempted: list[HostRef] = []
        try:
            for name, ref, agent in targets:
                attempted.append(ref)
                try:
                    if network.mode == vlans.MODE and agent is not None:
                        self.vlans.put(network, agent)  # its bridge, before libvirt's network
                    if network.mode != MODE:  # an overlay's parts are put below, each once
                        self.driver.ensure_network(ref, spec)
                except DriverError as exc:
                    raise BadRequest(f"host {name!r} cannot make the network: {exc}") from exc
            failed = self.overlays.put(network, spec, parts)
            if failed:
                raise BadRequest(f"the overlay could not be made: {'; '.join(failed)}")
        except BaseException:
            undo(network_id, attempted)
            raise
        with self.db.begin() as s:
            network = s.get(Network, network_id)
            assert network is not None
            network.state = NetworkState.ACTIVE
            cluster_id = network.cluster_id
        self.push_scopes(cluster_id)  # the other networks' ports keep out of this one
        return network

    @staticmethod
    def _insert(
        session: Session,
        principal: Principal,
        req: NetworkRequest,
        cluster: Cluster,
        network_id: str,
    ) -> Network:
        """The network's row with a fresh random tag (a tag already taken: the unique
        constraint refuses the row, and another tag is drawn)."""
        for _attempt in range(5):
            network = Network(
                id=network_id,
                name=req.name,
                project_id=principal.project_id,
                cluster_id=cluster.id,
                mode=req.mode,
                host_bridge=req.host_bridge,
                host_interface=req.host_interface,
                tag=secrets.token_hex(4),
                segment_id=(
                    FIRST_VNI + secrets.randbelow(LAST_VNI - FIRST_VNI + 1)
                    if req.mode == "overlay"
                    else req.segmentation_id
                ),
                state=NetworkState.CREATING,
            )
            try:
                with session.begin_nested():
                    session.add(network)
                    session.flush()
                return network
            except IntegrityError:
                if session.scalar(
                    select(Network).where(
                        Network.project_id == principal.project_id, Network.name == req.name
                    )
                ):
                    raise Conflict(f"a network named {req.name!r} already exists") from None
        raise Conflict("could not allocate a network tag or segment id; try again")

    def _undo(self, network_id: str, refs: list[HostRef]) -> None:
        """A network that could not be made: removed from ``refs``, its rows deleted."""
        self._empty(network_id, refs, delete=True)

    def _empty(self, network_id: str, refs: list[HostRef], delete: bool = False) -> None:
        """Remove the network from ``refs`` and delete its subnets: it is ``empty``
        (or, ``delete``, gone)."""
        with self.db.read() as s:
            network = s.get(Network, network_id)
            if network is None:
                return
            name = network.libvirt_name
        self._remove_devices(network_id)
        for failure in call_each(refs, lambda ref: self.driver.remove_network(ref, name)):
            log.warning("could not remove network %s from %s", name, failure)
        with self.db.begin() as s:
            for subnet in subnets_of(s, network_id):
                s.delete(subnet)
            s.flush()
            network = s.get(Network, network_id)
            if network is not None and delete:
                s.delete(network)
            elif network is not None:
                network.state, network.error = NetworkState.EMPTY, None

    def _remove_devices(self, network_id: str) -> None:
        """An overlay network's VXLAN devices, a vlan network's 802.1Q devices and
        bridges, leave every host of the cluster that answers (one that does not:
        logged; what it keeps carries no traffic, its libvirt network being gone)."""
        with self.db.read() as s:
            network = s.get(Network, network_id)
            if network is None or network.segment_id is None:
                return
            agents = [a for h in hosts_of(s, network) if (a := self.hosts.agent(h)) is not None]
            s.expunge(network)
        if network.mode == vlans.MODE:
            for failure in self.vlans.remove(network, agents):
                log.warning("could not remove %s: %s", network.vlan_device, failure)
        else:
            self.overlays.remove(network.overlay_device, agents)

    def undo_interrupted(self) -> None:
        """Networks a dead process left half-created are removed everywhere; those it
        left getting (or losing) their subnets are ``empty`` again; those it left
        being deleted are deleted (a host that refuses leaves it ``error``). At
        start-up, and in the housekeeping rounds for controllers that died: never a
        network another controller is working on."""
        in_flight = Network.state.in_(
            (NetworkState.CREATING, NetworkState.ADDING, NetworkState.DELETING)
        )
        with self.db.read() as s:
            found = list(s.scalars(select(Network.id).where(in_flight)))
        if not found:
            return
        with self.in_flight.orphans(KIND, found) as orphaned:
            with self.db.read() as s:
                stale = [
                    (n.id, n.state, n.libvirt_name, [self.hosts.ref(h) for h in hosts_of(s, n)])
                    for n in s.scalars(select(Network).where(in_flight, Network.id.in_(orphaned)))
                ]
            for network_id, state, name, refs in stale:
                log.warning("undoing the interrupted operation on network %s", network_id)
                self._undo_one(network_id, state, name, refs)

    def _undo_one(self, network_id: str, state: str, name: str, refs: list[HostRef]) -> None:
        if state != NetworkState.DELETING:
            self._empty(network_id, refs, delete=state == NetworkState.CREATING)
            return
        failed = call_each(refs, lambda ref: self.driver.remove_network(ref, name))
        if failed:
            with self.db.begin() as s:
                network = s.get(Network, network_id)
                if network is not None:
                    network.state = NetworkState.ERROR
                    network.error = f"delete interrupted: {'; '.join(failed)}"
            return
        self._forget(network_id, refs)

    def delete(self, principal: Principal, ref: str) -> None:
        """Remove the network from every host of its cluster, then its rows; if a host
        refuses, nothing changes (it is ``active`` again). It is ``deleting`` while the
        hosts are called (outside any transaction), so no port joins it meanwhile; a
        delete a dead process left half-done is finished at start-up."""
        with self._operation(principal, ref) as network_id:
            self._delete(principal, network_id)

    def _delete(self, principal: Principal, ref: str) -> None:
        with self.db.begin() as s:
            network = self.get(s, principal, ref)
            if network.state not in (NetworkState.ACTIVE, NetworkState.ERROR, NetworkState.EMPTY):
                raise Conflict(f"network {network.name!r} is {network.state}")
            _refuse_with_ports(s, network)
            before, network.state = network.state, NetworkState.DELETING
            network_id, name = network.id, network.libvirt_name
            refs = [self.hosts.ref(h) for h in hosts_of(s, network)]
        failed = call_each(refs, lambda ref: self.driver.remove_network(ref, name))
        if failed:
            with self.db.begin() as s:
                network = s.get(Network, network_id)
                if network is not None:
                    network.state = before
            raise Unavailable(f"could not remove the network from a host: {'; '.join(failed)}")
        self._forget(network_id, refs)

    def _forget(self, network_id: str, refs: list[HostRef]) -> None:
        """The network is gone from the hosts: its devices, rows and scope filters go."""
        self._remove_devices(network_id)
        with self.db.begin() as s:
            network = s.get(Network, network_id)
            if network is None:
                return
            scope, cluster_id = network.scope_filter_name, network.cluster_id
            for subnet in subnets_of(s, network.id):
                s.delete(subnet)
            s.flush()
            s.delete(network)
        for host_ref in refs:
            try:
                self.filters.remove(host_ref, scope)
            except DriverError as exc:  # unused by any NIC: harmless if left
                log.warning("could not remove filter %s from %s: %s", scope, host_ref.uri, exc)
        self.push_scopes(cluster_id)

    def get(self, session: Session, principal: Principal, ref: str) -> Network:
        return get_by_id_or_name(session, Network, ref, "network", **principal.scope())

    def ensure_on_host(self, host_id: str) -> None:
        """Define on a host (one just added to a cluster) the cluster's networks; a
        host that refuses one marks that network ``error``."""
        with self.db.begin() as s:
            host = s.get(Host, host_id)
            if host is None or host.state != HostStatus.UP or host.cluster_id is None:
                return
            host_name, ref = host.name, self.hosts.ref(host)
            wanted = [
                (n.id, spec_of(s, n))
                for n in s.scalars(
                    select(Network).where(
                        Network.cluster_id == host.cluster_id,
                        Network.state.in_((NetworkState.ACTIVE, NetworkState.ERROR)),
                        Network.mode != EXTERNAL,
                    )
                )
            ]
        for network_id, spec in wanted:
            if spec.mode == "overlay":
                failed = self.overlays.sync(network_id)
                if not failed:
                    continue
            try:
                self.driver.ensure_network(ref, spec)
            except DriverError as exc:
                with self.db.begin() as s:
                    network = s.get(Network, network_id)
                    if network is not None:
                        network.state, network.error = (
                            NetworkState.ERROR,
                            f"host {host_name}: {exc}",
                        )
