"""Claims: the resources an instance takes on a host, written atomically.

A claim is one conditional UPDATE: it adds the request to the host's counters
only while the result stays within the limits. Two concurrent placements can
both choose a host, but only those that still fit get their UPDATE through;
the other one sees 0 rows and tries its next host. The counters change only
in the transactions that add, move or remove instances, and are recomputed
from the instances at start-up (``heal``).
"""

from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from nubis.db.models import Host, Instance
from nubis.services.scheduler.filters import PlacementRequest
from nubis.services.scheduler.state import HostState


def claim(session: Session, host: HostState, req: PlacementRequest) -> bool:
    conditions = [
        Host.id == host.id,
        Host.state == "up",
        Host.enabled.is_(True),
        Host.maintenance == "none",
        Host.alloc_vcpus + req.vcpus <= host.vcpu_limit,
        Host.alloc_memory_mib + req.memory_mib <= host.memory_limit,
        Host.alloc_disk_gib + req.disk_gib <= host.disk_limit,
    ]
    if host.max_instances is not None:
        conditions.append(Host.instance_count < host.max_instances)
    result = session.execute(
        update(Host)
        .where(*conditions)
        .values(
            alloc_vcpus=Host.alloc_vcpus + req.vcpus,
            alloc_memory_mib=Host.alloc_memory_mib + req.memory_mib,
            alloc_disk_gib=Host.alloc_disk_gib + req.disk_gib,
            instance_count=Host.instance_count + 1,
        )
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def release(session: Session, host_id: str, vcpus: int, memory_mib: int, disk_gib: int) -> None:
    session.execute(
        update(Host)
        .where(Host.id == host_id)
        .values(
            alloc_vcpus=Host.alloc_vcpus - vcpus,
            alloc_memory_mib=Host.alloc_memory_mib - memory_mib,
            alloc_disk_gib=Host.alloc_disk_gib - disk_gib,
            instance_count=Host.instance_count - 1,
        )
        .execution_options(synchronize_session=False)
    )


def heal(session: Session) -> None:
    """Recompute every host's counters from the instances placed on it."""
    totals = {
        row.host_id: row
        for row in session.execute(
            select(
                Instance.host_id,
                func.sum(Instance.vcpus).label("vcpus"),
                func.sum(Instance.memory_mib).label("memory"),
                func.sum(Instance.disk_gib).label("disk"),
                func.count().label("count"),
            )
            .where(Instance.host_id.is_not(None))
            .group_by(Instance.host_id)
        ).all()
    }
    for host in session.scalars(select(Host)).all():
        row = totals.get(host.id)
        host.alloc_vcpus = int(row.vcpus) if row else 0
        host.alloc_memory_mib = int(row.memory) if row else 0
        host.alloc_disk_gib = int(row.disk) if row else 0
        host.instance_count = int(row.count) if row else 0
