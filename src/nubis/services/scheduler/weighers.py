"""Scheduler weighers: order the hosts that passed the filters, best first."""

from __future__ import annotations

from nubis.services.scheduler.filters import PlacementRequest
from nubis.services.scheduler.state import HostState


def free_share(host: HostState) -> float:
    """Mean share of vCPU and memory capacity still free (0 full .. 1 empty)."""

    def share(limit: float, allocated: int) -> float:
        return max(0.0, (limit - allocated) / limit) if limit > 0 else 0.0

    return (
        share(host.vcpu_limit, host.alloc_vcpus) + share(host.memory_limit, host.alloc_memory_mib)
    ) / 2


def spread(host: HostState, req: PlacementRequest) -> float:
    """Emptiest host first: VMs spread evenly (the default)."""
    return free_share(host)


def pack(host: HostState, req: PlacementRequest) -> float:
    """Fullest host first: fills hosts one after another, keeps others empty."""
    return -free_share(host)


def soft_rule_group(host: HostState, req: PlacementRequest) -> float:
    """Soft rule groups: +1 where the preference is met, -1 where it is not."""
    if req.group_policy is None or req.group_strict:
        return 0.0
    if req.group_policy == "affinity":
        return 1.0 if host.id in req.member_host_ids else 0.0
    if req.group_policy == "anti-affinity":
        return -1.0 if host.id in req.member_host_ids else 0.0
    if req.group_policy == "hosts":
        return 1.0 if host.id in req.group_host_ids else -1.0
    return 0.0


WEIGHERS = {"spread": spread, "pack": pack}


def order(hosts: list[HostState], req: PlacementRequest) -> list[HostState]:
    """Rule-group preference first, then the cluster's weigher, then name (stable)."""
    return sorted(
        hosts,
        key=lambda h: (-soft_rule_group(h, req), -WEIGHERS.get(h.weigher, spread)(h, req), h.name),
    )
