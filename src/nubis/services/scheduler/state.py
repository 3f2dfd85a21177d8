"""What the scheduler knows of a host: one row per host, read in one Core query
(no ORM objects: a decision over 1,000 hosts must take milliseconds)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nubis.db.models import Cluster, Host

DEFAULTS = {
    "cpu_ratio": 3.0,
    "memory_ratio": 1.0,
    "disk_ratio": 1.0,
    "disable_threshold": 0.85,
    "weigher": "spread",
}


def limit_of(physical: float, ratio: float, threshold: float) -> int:
    """The most that may be allocated: physical x ratio x threshold, rounded down
    (with an epsilon, so 0.85 x 20 = 17 whatever the float rounding)."""
    return math.floor(physical * ratio * threshold + 1e-9)


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
        return allocated + requested <= math.floor(self.limit + 1e-9)


@dataclass(slots=True)
class HostState:
    id: str
    name: str
    cluster_id: str | None
    state: str
    enabled: bool
    maintenance: str
    virt_type: str
    cpus: int
    memory_mib: int
    disk_gib: int
    cpu_ratio: float
    memory_ratio: float
    disk_ratio: float
    threshold: float
    max_instances: int | None
    weigher: str
    alloc_vcpus: int
    alloc_memory_mib: int
    alloc_disk_gib: int
    instance_count: int

    vcpu_limit: int = field(init=False)
    memory_limit: int = field(init=False)
    disk_limit: int = field(init=False)

    def __post_init__(self) -> None:
        self.vcpu_limit = limit_of(self.cpus, self.cpu_ratio, self.threshold)
        self.memory_limit = limit_of(self.memory_mib, self.memory_ratio, self.threshold)
        self.disk_limit = limit_of(self.disk_gib, self.disk_ratio, self.threshold)

    def limits(self) -> tuple[Limits, Limits, Limits]:
        """vCPU, memory and disk capacity, for reports."""
        return (
            Limits.of(self.cpus, self.cpu_ratio, self.threshold),
            Limits.of(self.memory_mib, self.memory_ratio, self.threshold),
            Limits.of(self.disk_gib, self.disk_ratio, self.threshold),
        )


HOST_COLUMNS = (
    Host.id,
    Host.name,
    Host.cluster_id,
    Host.state,
    Host.enabled,
    Host.maintenance,
    func.coalesce(Host.virt_type_override, Host.virt_type),
    Host.cpus,
    Host.memory_mib,
    Host.disk_gib,
    Host.alloc_vcpus,
    Host.alloc_memory_mib,
    Host.alloc_disk_gib,
    Host.instance_count,
)
CLUSTER_COLUMNS = (
    Cluster.id,
    Cluster.cpu_ratio,
    Cluster.memory_ratio,
    Cluster.disk_ratio,
    Cluster.disable_threshold,
    Cluster.max_instances_per_host,
    Cluster.weigher,
)
NO_CLUSTER = (
    DEFAULTS["cpu_ratio"],
    DEFAULTS["memory_ratio"],
    DEFAULTS["disk_ratio"],
    DEFAULTS["disable_threshold"],
    None,
    DEFAULTS["weigher"],
)


def load_host_states(
    session: Session, cluster_id: str | None = None, host_ids: list[str] | None = None
) -> list[HostState]:
    """Two Core queries (clusters, then hosts): no ORM objects, no join, no sort."""
    conn = session.connection()
    clusters = {row[0]: tuple(row[1:]) for row in conn.execute(select(*CLUSTER_COLUMNS))}
    query = select(*HOST_COLUMNS)
    if cluster_id is not None:
        query = query.where(Host.cluster_id == cluster_id)
    if host_ids is not None:
        query = query.where(Host.id.in_(host_ids))
    # HostState's fields: the host's first ten columns, its cluster's six, then the
    # host's four allocation counters
    states = [
        HostState(*row[:10], *clusters.get(row[2], NO_CLUSTER), *row[10:])
        for row in conn.execute(query)
    ]
    return states
