"""Scheduler weighers: order the hosts that passed the filters, best first."""

from __future__ import annotations

import heapq
from collections.abc import Iterator

from sqlalchemy import case

from nubis.db.models import Host
from nubis.services.scheduler.filters import PlacementRequest
from nubis.services.scheduler.state import MEMORY_LIMIT, VCPU_LIMIT, WEIGHER, HostState


def free_share(host: HostState) -> float:
    """Mean share of vCPU and memory capacity still free (0 full .. 1 empty)."""
    return (
        _share(host.vcpu_limit, host.alloc_vcpus) + _share(host.memory_limit, host.alloc_memory_mib)
    ) / 2


def _share(limit: float, allocated: int) -> float:
    return max(0.0, (limit - allocated) / limit) if limit > 0 else 0.0


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

# The cluster weighers as one SQL sort key (smallest first), for the database's
# pre-selection of candidates; the candidates are then ordered by ``order``.
_FREE_SHARE_SQL = (
    (VCPU_LIMIT - Host.alloc_vcpus) / VCPU_LIMIT
    + (MEMORY_LIMIT - Host.alloc_memory_mib) / MEMORY_LIMIT
) / 2
ORDER_BY_SQL = (
    case((WEIGHER == "pack", _FREE_SHARE_SQL), else_=-_FREE_SHARE_SQL),
    Host.name,
)


def weight(host: HostState, req: PlacementRequest) -> tuple[float, float, str]:
    """The sort key: rule-group preference first, then the cluster's weigher, then
    the name (so equal hosts come in a stable order). Smallest is best."""
    weigher = spread if host.weigher == "spread" else WEIGHERS.get(host.weigher, spread)
    return (-soft_rule_group(host, req), -weigher(host, req), host.name)


def order(hosts: list[HostState], req: PlacementRequest) -> Iterator[HostState]:
    """The hosts best first, produced lazily: a placement usually takes the first,
    so the rest are only ordered when a concurrent claim took the best one."""
    keyed = [(weight(h, req), i) for i, h in enumerate(hosts)]
    best = min(keyed, default=None)
    if best is None:
        return
    yield hosts[best[1]]
    keyed.remove(best)
    heapq.heapify(keyed)
    while keyed:
        yield hosts[heapq.heappop(keyed)[1]]
