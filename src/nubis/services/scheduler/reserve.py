"""The HA reserve of a cluster: CloudStack's "(N-1)" rule.

With ``ha_reserve`` on, a new placement is refused when, after it, the hosts other
than the largest could no longer hold everything the cluster runs: the loss of any
one host must leave room to restart its VMs elsewhere. Restarts after a failure
(and migrations, which move capacity without adding any) are not held to it.
"""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.orm import Session

from nubis.db.models import Cluster, HostStatus
from nubis.services.scheduler.state import load_host_states


def shortfall(session: Session, cluster_id: str | None) -> str | None:
    """Why the cluster's reserve is broken (its hosts' counters as claimed in this
    transaction), or None. Locks the cluster row: reserve checks are serialised."""
    if cluster_id is None:
        return None
    locked = session.execute(
        update(Cluster)
        .where(Cluster.id == cluster_id, Cluster.ha_reserve.is_(True))
        .values(ha_reserve=True)
    ).rowcount
    if not locked:
        return None  # no reserve asked for
    hosts = [
        h
        for h in load_host_states(session, cluster_id)
        if h.state == HostStatus.UP and h.enabled and h.maintenance == "none"
    ]
    if len(hosts) < 2:
        return "the cluster keeps an HA reserve, which needs at least two hosts in service"
    resources = (
        ("vCPUs", [h.vcpu_limit for h in hosts], sum(h.alloc_vcpus for h in hosts)),
        ("memory MiB", [h.memory_limit for h in hosts], sum(h.alloc_memory_mib for h in hosts)),
        ("disk GiB", [h.disk_limit for h in hosts], sum(h.alloc_disk_gib for h in hosts)),
    )
    for name, limits, allocated in resources:
        room = sum(limits) - max(limits)
        if allocated > room:
            return (
                f"the cluster keeps an HA reserve: with this instance {allocated} {name} "
                f"would be allocated, more than the {room} left if its largest host failed"
            )
    per_host = hosts[0].max_instances
    count = sum(h.instance_count for h in hosts)
    if per_host is not None and count > (len(hosts) - 1) * per_host:
        return (
            f"the cluster keeps an HA reserve: {count} instances would exceed "
            f"(N-1) x {per_host} = {(len(hosts) - 1) * per_host}"
        )
    return None
