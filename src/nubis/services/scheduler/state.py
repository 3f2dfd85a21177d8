"""What the scheduler knows of a host: one row per host and its cluster's settings,
read in one Core query (no ORM objects: a decision over 1,000 hosts must take
milliseconds)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, func, select
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
    alloc_vcpus: int
    alloc_memory_mib: int
    alloc_disk_gib: int
    instance_count: int
    # the cluster's settings
    cpu_ratio: float
    memory_ratio: float
    disk_ratio: float
    threshold: float
    max_instances: int | None
    weigher: str

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


# The cluster's settings as SQL (defaults for a host in no cluster), and the limits
# HostState computes, as SQL expressions for the filters' WHERE clauses. They are not
# rounded down: for whole numbers n, n <= floor(x) exactly when n <= x.
CPU_RATIO = func.coalesce(Cluster.cpu_ratio, DEFAULTS["cpu_ratio"])
MEMORY_RATIO = func.coalesce(Cluster.memory_ratio, DEFAULTS["memory_ratio"])
DISK_RATIO = func.coalesce(Cluster.disk_ratio, DEFAULTS["disk_ratio"])
THRESHOLD = func.coalesce(Cluster.disable_threshold, DEFAULTS["disable_threshold"])
WEIGHER = func.coalesce(Cluster.weigher, DEFAULTS["weigher"])
VIRT_TYPE = func.coalesce(Host.virt_type_override, Host.virt_type)
VCPU_LIMIT = Host.cpus * CPU_RATIO * THRESHOLD + 1e-9
MEMORY_LIMIT = Host.memory_mib * MEMORY_RATIO * THRESHOLD + 1e-9
DISK_LIMIT = Host.disk_gib * DISK_RATIO * THRESHOLD + 1e-9

STATE_COLUMNS = (
    Host.id,
    Host.name,
    Host.cluster_id,
    Host.state,
    Host.enabled,
    Host.maintenance,
    VIRT_TYPE,
    Host.cpus,
    Host.memory_mib,
    Host.disk_gib,
    Host.alloc_vcpus,
    Host.alloc_memory_mib,
    Host.alloc_disk_gib,
    Host.instance_count,
    CPU_RATIO,
    MEMORY_RATIO,
    DISK_RATIO,
    THRESHOLD,
    Cluster.max_instances_per_host,
    WEIGHER,
)


def load_host_states(
    session: Session,
    cluster_id: str | None = None,
    host_ids: list[str] | None = None,
    where: Sequence[ColumnElement[bool]] = (),
    order_by: Sequence[ColumnElement[Any]] = (),
    limit: int | None = None,
) -> list[HostState]:
    """One Core query, hosts joined with their cluster: no ORM objects. ``where``,
    ``order_by`` and ``limit`` let the database pre-select candidates."""
    query = (
        select(*STATE_COLUMNS)
        .select_from(Host)
        .outerjoin(Cluster, Host.cluster_id == Cluster.id)
        .where(*where)
    )
    if cluster_id is not None:
        query = query.where(Host.cluster_id == cluster_id)
    if host_ids is not None:
        query = query.where(Host.id.in_(host_ids))
    if order_by:
        query = query.order_by(*order_by)
    if limit is not None:
        query = query.limit(limit)
    # the columns are HostState's fields in order; all rows fetched at once
    # (iterating a result fetches them one by one)
    return [HostState(*row) for row in session.connection().execute(query).all()]
