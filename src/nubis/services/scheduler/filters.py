"""Scheduler filters: each removes the hosts that cannot take the VM, and says why."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy import ColumnElement, and_, or_

from nubis.db.models import Cluster, Host, HostStatus
from nubis.services.scheduler.state import (
    DISK_LIMIT,
    MEMORY_LIMIT,
    VCPU_LIMIT,
    VIRT_TYPE,
    HostState,
)


@dataclass(frozen=True)
class PlacementRequest:
    vcpus: int
    memory_mib: int
    disk_gib: int
    virt_type: str | None = None  # a required virtualization type, if any
    host_id: str | None = None  # an explicit target
    cluster_id: str | None = None  # stay inside this cluster (migration)
    exclude_host_ids: frozenset[str] = frozenset()  # e.g. the source of a migration
    # rule group: policy, strictness, pinned hosts, hosts of the other members
    group_policy: str | None = None
    group_strict: bool = True
    group_host_ids: frozenset[str] = frozenset()
    member_host_ids: frozenset[str] = field(default_factory=frozenset)
    # a new instance: refused if it breaks the cluster's HA reserve (see reserve.py)
    keep_ha_reserve: bool = False


class Filter(Protocol):
    name: str

    def reject(self, host: HostState, req: PlacementRequest) -> bool: ...

    def where(self, req: PlacementRequest) -> ColumnElement[bool] | None:
        """The same rule as a condition on hosts joined with clusters: the database
        pre-selects candidates with it. It must accept every host ``reject`` accepts
        (tests check both agree); None when the filter cannot remove any host."""


class HostStateFilter:
    name = "host state (up, enabled, not in maintenance)"

    def reject(self, host: HostState, req: PlacementRequest) -> bool:
        return host.state != HostStatus.UP or not host.enabled or host.maintenance != "none"

    def where(self, req: PlacementRequest) -> ColumnElement[bool] | None:
        return and_(Host.state == HostStatus.UP, Host.enabled.is_(True), Host.maintenance == "none")


class RequestedHostFilter:
    name = "requested host / cluster"

    def reject(self, host: HostState, req: PlacementRequest) -> bool:
        return (
            (req.host_id is not None and host.id != req.host_id)
            or (req.cluster_id is not None and host.cluster_id != req.cluster_id)
            or host.id in req.exclude_host_ids
        )

    def where(self, req: PlacementRequest) -> ColumnElement[bool] | None:
        conditions = []
        if req.host_id is not None:
            conditions.append(Host.id == req.host_id)
        if req.cluster_id is not None:
            conditions.append(Host.cluster_id == req.cluster_id)
        if req.exclude_host_ids:
            conditions.append(Host.id.not_in(sorted(req.exclude_host_ids)))
        return and_(*conditions) if conditions else None


class VirtTypeFilter:
    name = "virtualization type"

    def reject(self, host: HostState, req: PlacementRequest) -> bool:
        return req.virt_type is not None and host.virt_type != req.virt_type

    def where(self, req: PlacementRequest) -> ColumnElement[bool] | None:
        return None if req.virt_type is None else VIRT_TYPE == req.virt_type


class CpuFilter:
    name = "vCPU capacity"

    def reject(self, host: HostState, req: PlacementRequest) -> bool:
        return host.alloc_vcpus + req.vcpus > host.vcpu_limit

    def where(self, req: PlacementRequest) -> ColumnElement[bool] | None:
        return Host.alloc_vcpus + req.vcpus <= VCPU_LIMIT


class MemoryFilter:
    name = "memory capacity"

    def reject(self, host: HostState, req: PlacementRequest) -> bool:
        return host.alloc_memory_mib + req.memory_mib > host.memory_limit

    def where(self, req: PlacementRequest) -> ColumnElement[bool] | None:
        return Host.alloc_memory_mib + req.memory_mib <= MEMORY_LIMIT


class DiskFilter:
    name = "disk capacity"

    def reject(self, host: HostState, req: PlacementRequest) -> bool:
        return host.alloc_disk_gib + req.disk_gib > host.disk_limit

    def where(self, req: PlacementRequest) -> ColumnElement[bool] | None:
        return Host.alloc_disk_gib + req.disk_gib <= DISK_LIMIT


class MaxInstancesFilter:
    name = "max instances per host"

    def reject(self, host: HostState, req: PlacementRequest) -> bool:
        return host.max_instances is not None and host.instance_count >= host.max_instances

    def where(self, req: PlacementRequest) -> ColumnElement[bool] | None:
        return or_(
            Cluster.max_instances_per_host.is_(None),
            Host.instance_count < Cluster.max_instances_per_host,
        )


class RuleGroupFilter:
    """Strict rule groups: affinity (with the other members), anti-affinity (away from
    them), hosts (only the listed hosts). Soft groups are preferences (weighers)."""

    name = "rule group"

    def reject(self, host: HostState, req: PlacementRequest) -> bool:
        if req.group_policy is None or not req.group_strict:
            return False
        if req.group_policy == "affinity":
            return bool(req.member_host_ids) and host.id not in req.member_host_ids
        if req.group_policy == "anti-affinity":
            return host.id in req.member_host_ids
        if req.group_policy == "hosts":
            return host.id not in req.group_host_ids
        return False

    def where(self, req: PlacementRequest) -> ColumnElement[bool] | None:
        if req.group_policy is None or not req.group_strict:
            return None
        if req.group_policy == "affinity" and req.member_host_ids:
            return Host.id.in_(sorted(req.member_host_ids))
        if req.group_policy == "anti-affinity" and req.member_host_ids:
            return Host.id.not_in(sorted(req.member_host_ids))
        if req.group_policy == "hosts":
            return Host.id.in_(sorted(req.group_host_ids))
        return None


FILTERS: tuple[Filter, ...] = (
    HostStateFilter(),
    RequestedHostFilter(),
    VirtTypeFilter(),
    RuleGroupFilter(),
    MaxInstancesFilter(),
    CpuFilter(),
    MemoryFilter(),
    DiskFilter(),
)
