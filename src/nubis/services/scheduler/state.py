"""What the scheduler knows of a host: one row per host, read in one query."""

from __future__ import annotations

import math
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from nubis.db.models import Cluster, Host


@dataclass(frozen=True)
class Limits:
    """Capacities of one resource on a host (see docs/scheduler.md for the rule)."""

    physical: float
    overcommitted: float  # physical x cluster ratio
    limit: float  # overcommitted x disable threshold: allocation may not pass it

    @classmethod
    def of(cls, physical: float, ratio: float, threshold: float) -> Limits:
        return cls(physical, physical * ratio, physical * ratio * threshold)

    def fits(self, allocated: int, requested: int) -> bool:
        # a small epsilon so 0.85 x 6 = 5.1 admits 5 whatever the float rounding
        return allocated + requested <= math.floor(self.limit + 1e-9)


@dataclass(frozen=True)
class HostState:
    id: str
    name: str
    cluster_id: str | None
    state: str
    enabled: bool
    maintenance: str
    virt_type: str
    vcpus: Limits
    memory_mib: Limits
    disk_gib: Limits
    max_instances: int | None
    alloc_vcpus: int
    alloc_memory_mib: int
    alloc_disk_gib: int
    instance_count: int
    weigher: str = "spread"


def host_state(host: Host, cluster: Cluster | None) -> HostState:
    c = cluster or Cluster(
        cpu_ratio=3.0, memory_ratio=1.0, disk_ratio=1.0, disable_threshold=0.85, weigher="spread"
    )
    return HostState(
        id=host.id,
        name=host.name,
        cluster_id=host.cluster_id,
        state=host.state,
        enabled=host.enabled,
        maintenance=host.maintenance,
        virt_type=host.effective_virt_type,
        vcpus=Limits.of(host.cpus, c.cpu_ratio, c.disable_threshold),
        memory_mib=Limits.of(host.memory_mib, c.memory_ratio, c.disable_threshold),
        disk_gib=Limits.of(host.disk_gib, c.disk_ratio, c.disable_threshold),
        max_instances=c.max_instances_per_host,
        alloc_vcpus=host.alloc_vcpus,
        alloc_memory_mib=host.alloc_memory_mib,
        alloc_disk_gib=host.alloc_disk_gib,
        instance_count=host.instance_count,
        weigher=c.weigher,
    )


def load_host_states(session: Session, cluster_id: str | None = None) -> list[HostState]:
    query = select(Host, Cluster).outerjoin(Cluster, Host.cluster_id == Cluster.id)
    if cluster_id is not None:
        query = query.where(Host.cluster_id == cluster_id)
    return [host_state(h, c) for h, c in session.execute(query.order_by(Host.name)).all()]
