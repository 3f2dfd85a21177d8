"""Overlay networks: one L2 segment over every host of a cluster, carried in VXLAN.

Each host holds the network as a libvirt network (bridge, distributed gateway and
dnsmasq, with every port's reservation and name: a guest gets its address from the
host it runs on, and resolves its neighbours' names wherever they run) and a VXLAN
device on the bridge, which its network agent keeps. The control plane computes
what every host should hold from its own tables (``desired``) and puts it on each
host that is up (``sync``): flooding entries to every other host, and one entry
per port (its MAC -> the address of the host its instance is on). ``sync`` runs
after every change of a port or of where an instance runs, when a host comes back,
and in the periodic reconciliation; each call puts the whole state, so a host
that missed a change gets the current state at the next one.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from nubis.db.models import Host, HostStatus, Instance, Network, NetworkState, Port, Router
from nubis.db.models.routing import ROUTER_INTERFACE
from nubis.db.session import Database
from nubis.drivers.agent import AgentClient, AgentRef, DhcpState, OverlayState
from nubis.drivers.errors import DriverError
from nubis.drivers.libvirt.base import HostRef
from nubis.drivers.libvirt.networks import NetworkDriver, NetworkSpec, Reservation
from nubis.services.core.errors import BadRequest
from nubis.services.inventory.hosts import HostService
from nubis.services.network.specs import MODE, MTU, spec_of

log = logging.getLogger(__name__)
FIRST_VNI, LAST_VNI = 4096, 2**24 - 1


def tunnel_address(host: Host) -> str | None:
    """The host's underlay address: its libvirt URI's host when that is an IPv4
    address (None: a local URI, or a name; no name is looked up, as this is asked
    inside transactions)."""
    name = urlsplit(host.uri).hostname
    if not name:
        return None
    try:
        return str(ipaddress.IPv4Address(name))
    except ValueError:
        return None


def tunnelled(host: Host, network: Network) -> bool:
    """Whether the host's part of the network has a VXLAN device (an overlay network
    with its segment, on a host with an underlay address)."""
    return (
        network.mode == MODE and network.segment_id is not None and tunnel_address(host) is not None
    )


@dataclass(frozen=True)
class HostPart:
    """What one host holds of an overlay network."""

    host: str
    ref: HostRef
    agent: AgentRef | None  # None: the host has no network agent (it gets no tunnel)
    state: OverlayState | None  # None: a host alone in its cluster needs no tunnel
    router: str | None = None  # the default gateway the network's DHCP hands out


MIGRATING = "migrating"


def forwarding(session: Session, network: Network, addresses: dict[str, str]) -> dict[str, str]:
    """MAC -> underlay address of the host its instance is on, for every port whose
    instance is on a host in ``addresses`` (host id -> address). The ports of an
    instance being migrated have no entry: their frames are flooded to every host,
    so they reach it on either side of the switch-over, until it has landed."""
    rows = session.execute(
        select(Port.mac, Instance.host_id, Instance.task_state)
        .join(Instance, Instance.id == Port.instance_id)
        .where(Port.network_id == network.id)
    ).all()
    legs = session.execute(
        select(Port.mac, Router.host_id)
        .join(Router, Router.id == Port.router_id)
        .where(Port.network_id == network.id, Port.device_owner == ROUTER_INTERFACE)
    ).all()
    return {
        **{
            mac.lower(): addresses[host]
            for mac, host, task_state in rows
            if host in addresses and task_state != MIGRATING
        },
        **{mac.lower(): addresses[host] for mac, host in legs if host in addresses},
    }


def router_address(session: Session, network: Network) -> str | None:
    """The address of the network's router leg (its guests' default gateway)."""
    return session.scalar(
        select(Port.ip).where(Port.network_id == network.id, Port.device_owner == ROUTER_INTERFACE)
    )


class OverlayService:
    def __init__(
        self, db: Database, driver: NetworkDriver, agents: AgentClient, hosts: HostService
    ) -> None:
        self.db = db
        self.driver = driver
        self.agents = agents
        self.hosts = hosts

    @staticmethod
    def check_cluster(session: Session, hosts: HostService, cluster_id: str) -> None:
        """An overlay network needs an agent on every host of a cluster of several."""
        members = list(session.scalars(select(Host).where(Host.cluster_id == cluster_id)))
        if len(members) < 2:
            return
        missing = [h.name for h in members if hosts.agent(h) is None or not tunnel_address(h)]
        if missing:
            raise BadRequest(
                "an overlay network needs the network agent on every host of the cluster "
                f"(PUT /hosts/<host>/agent) and an IPv4 underlay address; missing on: "
                f"{', '.join(sorted(missing))}"
            )

    def desired(self, session: Session, network: Network, spec: NetworkSpec) -> list[HostPart]:
        """What each host of the network's cluster that is up should hold."""
        members = [
            h
            for h in session.scalars(select(Host).where(Host.cluster_id == network.cluster_id))
            if h.state == HostStatus.UP
        ]
        addresses = {h.id: a for h in members if (a := tunnel_address(h)) is not None}
        fdb = forwarding(session, network, addresses)
        router = router_address(session, network)
        parts = []
        for host in members:
            agent = self.hosts.agent(host)  # None: refused at creation; one added since
            local = addresses.get(host.id)
            state = None
            if local is not None and tunnelled(host, network):
                state = OverlayState(
                    vni=network.segment_id,
                    bridge=spec.bridge,
                    mac=network.gateway_mac,
                    mtu=MTU,
                    local=local,
                    peers=[a for hid, a in addresses.items() if hid != host.id],
                    fdb=fdb,
                )
            parts.append(HostPart(host.name, self.hosts.ref(host), agent, state, router))
        return parts

    def put(self, network: Network, spec: NetworkSpec, parts: list[HostPart]) -> list[str]:
        """Put each host's part (outside any transaction); the hosts that failed."""
        failed = []
        for part in parts:
            try:
                self.driver.ensure_network(part.ref, spec)
                self.driver.sync_reservations(part.ref, spec.name, list(spec_reservations(spec)))
                if part.agent is None:
                    if part.state is not None and part.state.peers:
                        failed.append(f"{part.host}: no network agent, so no tunnel to the others")
                else:
                    if part.state is not None:
                        self.agents.put_overlay(part.agent, network.overlay_device, part.state)
                    self.agents.put_dhcp(part.agent, spec.name, DhcpState(router=part.router))
            except DriverError as exc:
                failed.append(f"{part.host}: {exc}")
        return failed

    def sync(self, network_id: str) -> list[str]:
        """Put the network's current state on every host of its cluster that is up;
        returns the failures (logged; the next sync repeats them)."""
        with self.db.read() as s:
            network = s.get(Network, network_id)
            if network is None or network.mode != MODE:
                return []
            if network.state not in (NetworkState.ACTIVE, NetworkState.ERROR):
                return []
            spec = spec_of(s, network)
            parts = self.desired(s, network, spec)
            s.expunge(network)
        failed = self.put(network, spec, parts)
        for failure in failed:
            log.warning("overlay network %s: %s", network.name, failure)
        return failed

    def sync_networks(self, network_ids: list[str]) -> None:
        """Sync every overlay network of ``network_ids``."""
        for network_id in sorted(set(network_ids)):
            self.sync(network_id)

    def sync_instance(self, instance_id: str) -> None:
        """The instance's ports moved, came or went, or are about to move: its overlay
        networks are synced."""
        with self.db.read() as s:
            ids = list(
                s.scalars(
                    select(Network.id)
                    .join(Port, Port.network_id == Network.id)
                    .where(Port.instance_id == instance_id, Network.mode == MODE)
                )
            )
        self.sync_networks(ids)

    def sync_all(self) -> None:
        """Every overlay network (the periodic reconciliation, a host that is back)."""
        with self.db.read() as s:
            ids = list(s.scalars(select(Network.id).where(Network.mode == MODE)))
        self.sync_networks(ids)

    def remove(self, device: str, agents: list[AgentRef]) -> None:
        """A network's VXLAN device leaves the hosts that answer."""
        for agent in agents:
            try:
                self.agents.remove_overlay(agent, device)
            except DriverError as exc:
                log.warning("could not remove %s: %s", device, exc)


def spec_reservations(spec: NetworkSpec) -> tuple[Reservation, ...]:
    return spec.subnets[0].reservations if spec.subnets else ()
