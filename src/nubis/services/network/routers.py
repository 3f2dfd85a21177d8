"""Routers: a network namespace on a network node joining overlay networks to each
other and to an external network (source NAT, floating IPs, port forwardings).

A router is placed on a host of its cluster that has a network agent (the one with
the fewest routers, or the one a system administrator names) and stays there; its
legs are ports (``device_owner`` ``network:router_interface`` on a tenant network,
``network:router_gateway`` on the external network), so their addresses come from
the same allocation as every other port. The router's state is computed from the
tables (``desired``) and put whole on its host by the agent (``sync``), after every
change, when its host is back, and at every reconciliation; there, router
namespaces no router of the table owns are removed.

A change the host refuses (an external bridge it does not have, say) is undone and
reported; one it cannot be told (the host is down) stays, the router is ``error``
until the reconciliation puts it.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import delete, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nubis.db.models import (
    Cluster,
    FloatingIP,
    Host,
    HostStatus,
    Network,
    NetworkState,
    Port,
    Router,
    StaleRouter,
    Subnet,
)
from nubis.db.models import PortForwarding as Forwarding
from nubis.db.models.routing import ROUTER_GATEWAY, ROUTER_INTERFACE
from nubis.db.session import Database
from nubis.drivers.agent import AgentClient, AgentRef, Floating, Forward, Leg, RouterState
from nubis.drivers.errors import DriverError, HostUnreachable
from nubis.services.core.errors import BadRequest, Conflict, Forbidden, NotFoundError
from nubis.services.core.lookup import get_by_id_or_name, reread, validate_name
from nubis.services.core.principal import Principal
from nubis.services.identity import policy, quotas
from nubis.services.inventory import topology
from nubis.services.inventory.hosts import HostService
from nubis.services.network import ports as port_alloc
from nubis.services.network.networks import NetworkService, subnets_of
from nubis.services.network.overlays import OverlayService, tunnelled
from nubis.services.network.specs import EXTERNAL, MODE, MTU
from nubis.tasks.in_flight import InFlight

log = logging.getLogger(__name__)
KIND = "router"  # the lease of a gateway move in flight: router:<id>


@dataclass(frozen=True)
class RouterRequest:
    name: str
    cluster: str | None = None
    host: str | None = None  # the network node (system administrators only)
    external_network: str | None = None
    snat: bool = True


def external_network(
    session: Session, principal: Principal, ref: str, cluster_id: str | None = None
) -> Network:
    """An external network, by id or name, whichever project defined it. Naming one
    of the caller's own other networks says it is not external; another project's
    network is not found, as any name that does not exist."""
    try:
        network = get_by_id_or_name(session, Network, ref, "network", mode=EXTERNAL)
    except NotFoundError:
        own = select(Network).where(or_(Network.id == ref, Network.name == ref))
        if not principal.all_projects:
            own = own.where(Network.project_id == principal.project_id)
        if session.scalar(own.limit(1)) is not None:
            raise BadRequest(f"network {ref!r} is not an external network") from None
        raise
    if network.state != NetworkState.ACTIVE:
        raise Conflict(f"external network {network.name!r} is {network.state}")
    if cluster_id is not None and network.cluster_id != cluster_id:
        raise BadRequest(f"external network {network.name!r} is in another cluster")
    return network


def _prefix(session: Session, port: Port) -> int:
    subnet = session.get(Subnet, port.subnet_id)
    assert subnet is not None
    return ipaddress.ip_network(subnet.cidr).prefixlen


def carried(session: Session, network_ids: list[str], external_id: str | None = None) -> int:
    """How many floating IPs (of ``external_id``, default any) and port forwardings
    reach ports of these networks."""
    floating = (
        select(func.count())
        .select_from(FloatingIP)
        .join(Port, Port.id == FloatingIP.fixed_port_id)
        .where(Port.network_id.in_(network_ids))
    )
    if external_id is not None:
        floating = floating.where(FloatingIP.network_id == external_id)
    forwarded = (
        select(func.count())
        .select_from(Forwarding)
        .join(Port, Port.id == Forwarding.port_id)
        .where(Port.network_id.in_(network_ids))
    )
    return (session.scalar(floating) or 0) + (session.scalar(forwarded) or 0)


def interfaces(session: Session, router_id: str) -> list[Port]:
    return list(
        session.scalars(
            select(Port)
            .where(Port.router_id == router_id, Port.device_owner == ROUTER_INTERFACE)
            .order_by(Port.created_at, Port.id)
        )
    )


def gateway_port(session: Session, router: Router) -> Port | None:
    """The router's leg on its external network (while the gateway moves to another
    external network, the old one's port is kept until the host holds the new)."""
    return session.scalar(
        select(Port).where(
            Port.router_id == router.id,
            Port.device_owner == ROUTER_GATEWAY,
            Port.network_id == router.external_network_id,
        )
    )


def router_of_network(session: Session, network_id: str) -> Router | None:
    """The router the network has an interface on (a network joins at most one)."""
    return session.scalar(
        select(Router)
        .join(Port, Port.router_id == Router.id)
        .where(Port.network_id == network_id, Port.device_owner == ROUTER_INTERFACE)
    )


def desired(session: Session, router: Router) -> RouterState:
    """What the router's namespace should hold, from the tables."""
    legs, joined = [], []
    host = session.get(Host, router.host_id)
    for port in interfaces(session, router.id):
        joined.append(port.network_id)
        network = session.get(Network, port.network_id)
        assert network is not None
        tunnel = host is not None and tunnelled(host, network)
        legs.append(
            Leg(
                host_end=f"nri-{port.id[:8]}",
                bridge=network.bridge_name,
                address=f"{port.ip}/{_prefix(session, port)}",
                mac=port.mac,
                mtu=MTU,
                tunnel=network.overlay_device if tunnel else None,
            )
        )
    gateway, default_route = None, None
    gw = gateway_port(session, router)
    external = session.get(Network, router.external_network_id or "")
    if gw is not None and external is not None and external.host_bridge:
        gateway = Leg(
            host_end=router.gateway_device,
            bridge=external.host_bridge,
            address=f"{gw.ip}/{_prefix(session, gw)}",
            mac=gw.mac,
        )
        subnet = subnets_of(session, external.id)[0]
        default_route = subnet.gateway
    floating, forwards = [], []
    if gateway is not None and external is not None:
        rows = session.execute(
            select(FloatingIP.address, Port.ip)
            .join(Port, Port.id == FloatingIP.fixed_port_id)
            .where(Port.network_id.in_(joined), FloatingIP.network_id == external.id)
            .order_by(FloatingIP.address)
        ).all()
        floating = [Floating(external=a, internal=ip) for a, ip in rows]
        fwd = session.execute(
            select(Forwarding, FloatingIP.address)
            .join(FloatingIP, FloatingIP.id == Forwarding.floating_ip_id)
            .join(Port, Port.id == Forwarding.port_id)
            .where(Port.network_id.in_(joined), FloatingIP.network_id == external.id)
            .order_by(FloatingIP.address, Forwarding.protocol, Forwarding.external_port)
        ).all()
        forwards = [
            Forward(
                protocol=f.protocol,
                external=address,
                external_port=f.external_port,
                internal=f.internal_ip,
                internal_port=f.internal_port,
            )
            for f, address in fwd
        ]
    return RouterState(
        gateway=gateway,
        default_route=default_route,
        interfaces=legs,
        snat=router.snat,
        floating=floating,
        forwards=forwards,
    )


class RouterService:
    def __init__(
        self,
        db: Database,
        agents: AgentClient,
        hosts: HostService,
        overlays: OverlayService,
        networks: NetworkService,
        in_flight: InFlight,
    ) -> None:
        self.db = db
        self.in_flight = in_flight
        self.agents = agents
        self.hosts = hosts
        self.overlays = overlays
        self.networks = networks

    # -- reading ------------------------------------------------------------------------
    def get(self, session: Session, principal: Principal, ref: str) -> Router:
        return get_by_id_or_name(session, Router, ref, "router", **principal.scope())

    # -- making and removing -------------------------------------------------------------
    def create(self, principal: Principal, req: RouterRequest) -> Router:
        with self.db.begin() as s:
            validate_name(req.name, "router")
            if s.scalar(
                select(Router).where(
                    Router.project_id == principal.project_id, Router.name == req.name
                )
            ):
                raise Conflict(f"a router named {req.name!r} already exists")
            cluster = get_by_id_or_name(s, Cluster, req.cluster or topology.DEFAULT, "cluster")
            external = (
                external_network(s, principal, req.external_network, cluster.id)
                if req.external_network
                else None
            )
            host = self._place(s, principal, cluster.id, req.host)
            quotas.claim(s, principal.project_id, {"routers": 1})
            router = Router(
                name=req.name,
                project_id=principal.project_id,
                cluster_id=cluster.id,
                host_id=host.id,
                tag=secrets.token_hex(4),
                external_network_id=external.id if external else None,
                snat=req.snat,
            )
            try:
                with s.begin_nested():
                    s.add(router)
                    s.flush()
            except IntegrityError:
                raise Conflict(f"a router named {req.name!r} already exists") from None
            if external is not None:
                self._allocate_gateway(s, router, external)
            router_id = router.id
        try:
            self.sync(router_id, strict=True)
        except BadRequest:
            self._forget(router_id)
            raise
        return reread(self.db, Router, router_id, "router")

    def delete(self, principal: Principal, ref: str) -> None:
        """A router without interfaces goes; its namespace leaves its host (a host that
        is down loses it at the reconciliation)."""
        with self.db.begin() as s:
            router = self.get(s, principal, ref)
            legs = interfaces(s, router.id)
            if legs:
                raise Conflict(
                    f"router {router.name!r} still has {len(legs)} interface(s): remove them first"
                )
            router_id = router.id
        self._forget(router_id)

    def _forget(self, router_id: str) -> None:
        with self.db.begin() as s:
            router = s.get(Router, router_id)
            if router is None:
                return
            host = s.get(Host, router.host_id)
            agent = self.hosts.agent(host) if host is not None else None
            namespace, host_id = router.namespace, router.host_id
            for port in s.scalars(select(Port).where(Port.router_id == router_id)):
                s.delete(port)
            s.flush()
            s.delete(router)
            if agent is not None:  # until the host has let it go (a crash may come first)
                s.add(StaleRouter(host_id=host_id, namespace=namespace))
        if agent is not None:
            self._remove(host_id, agent, namespace)

    def _remove(self, host_id: str, agent: AgentRef, namespace: str) -> None:
        """Take a deleted router's namespace off its host, then its stale record; a
        host that cannot be asked keeps both (its reconciliation tries again)."""
        try:
            self.agents.remove_router(agent, namespace)
        except DriverError as exc:
            log.warning("router %s stays on its host until it is back: %s", namespace, exc)
            return
        self._gone(host_id, namespace)

    def _gone(self, host_id: str, namespace: str) -> None:
        with self.db.begin() as s:
            s.execute(
                delete(StaleRouter).where(
                    StaleRouter.host_id == host_id, StaleRouter.namespace == namespace
                )
            )

    # -- the external gateway -------------------------------------------------------------
    def set_gateway(
        self, principal: Principal, ref: str, network_ref: str | None, snat: bool = True
    ) -> Router:
        """Join the router to an external network (None: leave it)."""
        with self.db.read() as s:
            router_id = self.get(s, principal, ref).id
        busy = Conflict("another change of the router's gateway is under way; try again")
        with self.in_flight.running(KIND, router_id, busy):
            return self._set_gateway(principal, router_id, network_ref, snat)

    def _set_gateway(
        self, principal: Principal, ref: str, network_ref: str | None, snat: bool
    ) -> Router:
        with self.db.begin() as s:
            router = self.get(s, principal, ref)
            old = gateway_port(s, router)
            external = (
                external_network(s, principal, network_ref, router.cluster_id)
                if network_ref
                else None
            )
            moving = old is not None and (external is None or old.network_id != external.id)
            if moving:
                self._refuse_with_floating(s, router)
            before = (router.external_network_id, router.snat)
            router.snat = snat
            router.external_network_id = external.id if external else None
            new_id = None
            if external is not None and (old is None or moving):
                new_id = self._allocate_gateway(s, router, external).id
            router_id, old_id = router.id, old.id if old is not None and moving else None

        def undo(s: Session) -> None:
            found = s.get(Router, router_id)
            if found is not None:
                found.external_network_id, found.snat = before
            port = s.get(Port, new_id) if new_id else None
            if port is not None:
                s.delete(port)

        self._change(router_id, undo)
        if old_id:
            with self.db.begin() as s:
                port = s.get(Port, old_id)
                if port is not None:
                    s.delete(port)
        return reread(self.db, Router, router_id, "router")

    def _allocate_gateway(self, session: Session, router: Router, external: Network) -> Port:
        port = port_alloc.allocate(session, router.project_id, external, None)
        port.device_owner, port.router_id, port.status = ROUTER_GATEWAY, router.id, "attached"
        session.flush()
        return port

    @staticmethod
    def _refuse_with_floating(session: Session, router: Router) -> None:
        joined = [p.network_id for p in interfaces(session, router.id)]
        used = carried(session, joined, router.external_network_id)
        if used:
            raise Conflict(
                f"router {router.name!r} carries {used} floating IP(s) or port forwarding(s) "
                "through its external gateway: remove them first"
            )

    # -- interfaces -------------------------------------------------------------------
    def add_interface(self, principal: Principal, ref: str, network_ref: str) -> Port:
        """A leg on an overlay network: an address of its first subnet, which the
        network's DHCP then hands out as the default gateway."""
        with self.db.begin() as s:
            router = self.get(s, principal, ref)
            network = get_by_id_or_name(s, Network, network_ref, "network", **principal.scope())
            if network.mode != MODE:
                raise BadRequest(
                    f"network {network.name!r} is {network.mode}: routers join overlay networks"
                )
            if network.state != NetworkState.ACTIVE:
                raise Conflict(f"network {network.name!r} is {network.state}, not active")
            if network.cluster_id != router.cluster_id:
                raise BadRequest(f"network {network.name!r} is in another cluster")
            joined = router_of_network(s, network.id)
            if joined is not None:
                raise Conflict(
                    f"network {network.name!r} already has an interface on router {joined.name!r}"
                )
            port = port_alloc.allocate(s, network.project_id, network, None)
            port.device_owner, port.router_id, port.status = ROUTER_INTERFACE, router.id, "attached"
            s.flush()
            router_id, port_id, network_id = router.id, port.id, network.id
            cluster_id = router.cluster_id

        def undo(s: Session) -> None:
            found = s.get(Port, port_id)
            if found is not None:
                s.delete(found)

        self._change(router_id, undo, network_id)
        self.networks.push_scopes(cluster_id)
        return reread(self.db, Port, port_id, "router interface")

    def remove_interface(self, principal: Principal, ref: str, network_ref: str) -> None:
        with self.db.begin() as s:
            router = self.get(s, principal, ref)
            network = get_by_id_or_name(s, Network, network_ref, "network", **principal.scope())
            port = next((p for p in interfaces(s, router.id) if p.network_id == network.id), None)
            if port is None:
                raise NotFoundError(
                    f"router {router.name!r} has no interface on network {network.name!r}"
                )
            used = carried(s, [network.id])
            if used:
                raise Conflict(
                    f"{used} floating IP(s) or port forwarding(s) reach network "
                    f"{network.name!r} through router {router.name!r}: remove them first"
                )
            s.delete(port)
            router_id, network_id, cluster_id = router.id, network.id, router.cluster_id
        self.sync(router_id)
        self.overlays.sync(network_id)
        self.networks.push_scopes(cluster_id)

    # -- putting it on the host --------------------------------------------------------
    def _change(
        self, router_id: str, undo: Callable[[Session], None], network_id: str | None = None
    ) -> None:
        """The change is in the tables: put it on the router's host (and the network's
        DHCP on every host); if the host refuses, ``undo`` it and put the state back."""
        try:
            self.sync(router_id, strict=True)
        except BadRequest:
            with self.db.begin() as s:
                undo(s)
            self.sync(router_id)
            raise
        if network_id is not None:
            self.overlays.sync(network_id)

    def sync(self, router_id: str, strict: bool = False) -> None:
        """Put the router's state on its host. A refusal is recorded on the router
        (``strict``: raised as BadRequest); an unreachable host leaves it ``error``
        until the next reconciliation."""
        with self.db.read() as s:
            router = s.get(Router, router_id)
            if router is None:
                return
            host = s.get(Host, router.host_id)
            agent = self.hosts.agent(host) if host is not None else None
            state, namespace, host_name = (
                desired(s, router),
                router.namespace,
                host.name if host else "?",
            )
            host_state = host.state if host is not None else None
        error = None
        if agent is None:
            error = f"host {host_name} has no network agent"
        elif host_state == HostStatus.DOWN:
            # fenced or not yet back: its networks are put on it again first (the
            # host-back handling), then its routers
            error, strict = f"host {host_name} is down", False
        else:
            try:
                self.agents.put_router(agent, namespace, state)
            except HostUnreachable as exc:
                error = f"host {host_name} is unreachable: {exc}"
                strict = False
            except DriverError as exc:
                error = f"host {host_name}: {exc}"
        wanted = ("error", error) if error else ("active", None)
        with self.db.begin() as s:
            router = s.get(Router, router_id)
            if router is not None and (router.state, router.error) != wanted:
                router.state, router.error = wanted
        if error:
            log.warning("router %s: %s", namespace, error)
            if strict:
                raise BadRequest(f"the router's host refused the change: {error}")

    def undo_interrupted(self) -> None:
        """A gateway move a dead process left half-done (the new external leg
        recorded, the old one not yet released) keeps the leg the router's row names;
        the other's address goes back to its network. At start-up, and in the
        housekeeping rounds: never a move another controller is making."""
        stale = (
            select(Port)
            .join(Router, Router.id == Port.router_id)
            .where(
                Port.device_owner == ROUTER_GATEWAY,
                or_(
                    Router.external_network_id.is_(None),
                    Port.network_id != Router.external_network_id,
                ),
            )
        )
        with self.db.read() as s:
            found = {port.router_id for port in s.scalars(stale) if port.router_id}
        if not found:
            return
        with self.in_flight.orphans(KIND, found) as orphaned, self.db.begin() as s:
            for port in s.scalars(stale.where(Port.router_id.in_(orphaned))).all():
                log.info(
                    "releasing the stale gateway address %s of router %s", port.ip, port.router_id
                )
                s.delete(port)

    def sync_all(self) -> None:
        """Every router on its host; the namespaces of routers deleted while their host
        could not be told leave the hosts that are up (``StaleRouter``; a namespace
        Nubis has no record of stays: it may be another control plane's)."""
        self._sync_hosts(None)

    def sync_host(self, host_id: str) -> None:
        """The routers of one host on it (it is back), and its stray namespaces gone."""
        self._sync_hosts(host_id)

    def _sync_hosts(self, host_id: str | None) -> None:
        with self.db.read() as s:
            routers = select(Router)
            hosts = select(Host).where(Host.state == HostStatus.UP)
            if host_id is not None:
                routers = routers.where(Router.host_id == host_id)
                hosts = hosts.where(Host.id == host_id)
            ids: list[str] = []
            owned: dict[str, set[str]] = {}
            for router in s.scalars(routers):
                ids.append(router.id)
                owned.setdefault(router.host_id, set()).add(router.namespace)
            stale: dict[str, set[str]] = {}
            for row in s.scalars(select(StaleRouter)):
                stale.setdefault(row.host_id, set()).add(row.namespace)
            agents = [(h.id, a) for h in s.scalars(hosts) if (a := self.hosts.agent(h)) is not None]
        for router_id in ids:
            self.sync(router_id)
        for held_by, agent in agents:
            if stale.get(held_by):
                self._remove_stale(held_by, agent, stale[held_by] - owned.get(held_by, set()))

    def _remove_stale(self, host_id: str, agent: AgentRef, namespaces: set[str]) -> None:
        try:
            held = set(self.agents.routers(agent))
        except DriverError as exc:
            log.warning("could not list routers at %s: %s", agent.url, exc)
            return
        for namespace in sorted(namespaces):
            if namespace in held:
                self._remove(host_id, agent, namespace)
            else:
                self._gone(host_id, namespace)

    def sync_networks(self, network_ids: list[str]) -> None:
        """The routers of these networks are put again (their ports changed)."""
        with self.db.read() as s:
            ids = {r.id for n in set(network_ids) if (r := router_of_network(s, n)) is not None}
        for router_id in sorted(ids):
            self.sync(router_id)

    # -- helpers ------------------------------------------------------------------------
    def _place(
        self, session: Session, principal: Principal, cluster_id: str, ref: str | None
    ) -> Host:
        """The router's network node: the host named (system administrators), else the
        up host of the cluster with a network agent and the fewest routers."""
        candidates = [
            h
            for h in session.scalars(select(Host).where(Host.cluster_id == cluster_id))
            if h.state == HostStatus.UP and self.hosts.agent(h) is not None
        ]
        if ref is not None:
            if policy.SYSTEM_ADMIN not in principal.roles:
                raise Forbidden("choosing a router's host is for system administrators")
            host = get_by_id_or_name(session, Host, ref, "host")
            if host not in candidates:
                raise BadRequest(
                    f"host {host.name!r} cannot hold a router: it must be up, in the "
                    "router's cluster, with a network agent"
                )
            return host
        if not candidates:
            raise Conflict("no host of the cluster is up with a network agent to hold a router")
        load = dict(
            session.execute(select(Router.host_id, func.count()).group_by(Router.host_id)).all()
        )
        return min(candidates, key=lambda h: (load.get(h.id, 0), h.name))
