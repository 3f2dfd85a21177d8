"""VLAN provider networks: VLAN ``segment_id`` of an interface every host of the
cluster has (``host_interface``), for sites whose switches carry VLANs.

Each host's network agent makes the 802.1Q device (``nvl-<tag>``) and a bridge
(``nbr-<tag>``) for it; the libvirt network joins that bridge. Before anything
is recorded, every host of the cluster is asked whether its kernel carries VLANs
at all: one that does not (no 802.1Q, as on kernels built without it) refuses the
network with the reason, and nothing is made.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from nubis.db.models import Host, HostStatus, Network
from nubis.drivers.agent import AgentClient, AgentRef, VlanState
from nubis.drivers.errors import DriverError
from nubis.services.core.errors import BadRequest, Conflict
from nubis.services.inventory.hosts import HostService

MODE = "vlan"


@dataclass(frozen=True)
class VlanHost:
    name: str
    agent: AgentRef | None


def hosts_of_cluster(session: Session, hosts: HostService, cluster_id: str) -> list[VlanHost]:
    members = session.scalars(select(Host).where(Host.cluster_id == cluster_id))
    return [VlanHost(h.name, hosts.agent(h)) for h in members if h.state == HostStatus.UP]


def check_free(session: Session, cluster_id: str, vid: int) -> None:
    taken = session.scalar(
        select(Network.name).where(Network.cluster_id == cluster_id, Network.segment_id == vid)
    )
    if taken is not None:
        raise Conflict(f"VLAN {vid} of this cluster is network {taken!r}'s already")


class VlanService:
    def __init__(self, agents: AgentClient) -> None:
        self.agents = agents

    def check_support(self, targets: list[VlanHost]) -> None:
        """Every host can carry VLANs, or BadRequest naming the first that cannot and
        why (outside any transaction: the agents are asked)."""
        if not targets:
            raise Conflict("no host of the cluster is up: the network cannot be made anywhere")
        for host in targets:
            if host.agent is None:
                raise BadRequest(
                    f"host {host.name} has no network agent (PUT /hosts/{host.name}/agent): "
                    "it cannot make VLAN devices"
                )
            try:
                reason = self.agents.vlan_support(host.agent)
            except DriverError as exc:
                raise BadRequest(f"host {host.name} cannot be asked about VLANs: {exc}") from exc
            if reason is not None:
                raise BadRequest(f"host {host.name} cannot carry VLAN networks: {reason}")

    def put(self, network: Network, agent: AgentRef) -> None:
        assert network.host_interface is not None and network.segment_id is not None
        state = VlanState(
            interface=network.host_interface, vid=network.segment_id, bridge=network.bridge_name
        )
        self.agents.put_vlan(agent, network.vlan_device, state)

    def remove(self, network: Network, agents: list[AgentRef]) -> list[str]:
        failed = []
        for agent in agents:
            try:
                self.agents.remove_vlan(agent, network.vlan_device, network.bridge_name)
            except DriverError as exc:
                failed.append(str(exc))
        return failed
