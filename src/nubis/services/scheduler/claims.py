"""Claims: the resources an instance takes on a host, written atomically.

A claim is one conditional UPDATE: it adds the request to the host's counters
only while the result stays within the limits. Two concurrent placements can
both choose a host, but only those that still fit get their UPDATE through;
the other one sees 0 rows and tries its next host. The counters change only
in the transactions that add, move or remove instances, and are recomputed
from the instances at start-up (``heal``).
"""

from __future__ import annotations

from sqlalchemy import Update, bindparam, func, select, update
from sqlalchemy.orm import Session

from nubis.db.models import Host, HostStatus, Instance, Task, TaskStatus
from nubis.services.scheduler.filters import PlacementRequest
from nubis.services.scheduler.state import HostState


def _claim_statement(max_instances: bool) -> Update:
    """The claim UPDATE, built once: building a statement costs more than running it.
    (Parameters are prefixed: SQLAlchemy reserves the column names for SET.)"""
    conditions = [
        Host.id == bindparam("p_host_id"),
        Host.state == HostStatus.UP,
        Host.enabled.is_(True),
        Host.maintenance == "none",
        Host.alloc_vcpus + bindparam("p_vcpus") <= bindparam("p_vcpu_limit"),
        Host.alloc_memory_mib + bindparam("p_memory_mib") <= bindparam("p_memory_limit"),
        Host.alloc_disk_gib + bindparam("p_disk_gib") <= bindparam("p_disk_limit"),
    ]
    if max_instances:
        conditions.append(Host.instance_count < bindparam("p_max_instances"))
    return (
        update(Host)
        .where(*conditions)
        .values(
            alloc_vcpus=Host.alloc_vcpus + bindparam("p_vcpus"),
            alloc_memory_mib=Host.alloc_memory_mib + bindparam("p_memory_mib"),
            alloc_disk_gib=Host.alloc_disk_gib + bindparam("p_disk_gib"),
            instance_count=Host.instance_count + 1,
        )
    )


CLAIM = _claim_statement(max_instances=False)
CLAIM_MAX_INSTANCES = _claim_statement(max_instances=True)


def claim(session: Session, host: HostState, req: PlacementRequest) -> bool:
    """Add the request to the host's counters if it still fits; False if it no longer does."""
    params = {
        "p_host_id": host.id,
        "p_vcpus": req.vcpus,
        "p_memory_mib": req.memory_mib,
        "p_disk_gib": req.disk_gib,
        "p_vcpu_limit": host.vcpu_limit,
        "p_memory_limit": host.memory_limit,
        "p_disk_limit": host.disk_limit,
    }
    statement = CLAIM
    if host.max_instances is not None:
        statement = CLAIM_MAX_INSTANCES
        params["p_max_instances"] = host.max_instances
    # Core, on the session's connection: no loaded object needs synchronising
    return session.connection().execute(statement, params).rowcount == 1


def change(session: Session, host: HostState, vcpus: int, memory_mib: int, disk_gib: int) -> bool:
    """Add (or, negative, take back) an instance's change of size on its host: it must
    still fit where it grows; False (nothing changed) if it does not."""
    conditions = [Host.id == host.id]
    for column, delta, limit in (
        (Host.alloc_vcpus, vcpus, host.vcpu_limit),
        (Host.alloc_memory_mib, memory_mib, host.memory_limit),
        (Host.alloc_disk_gib, disk_gib, host.disk_limit),
    ):
        if delta > 0:
            conditions.append(column + delta <= limit)
    changed = session.execute(
        update(Host)
        .where(*conditions)
        .values(
            alloc_vcpus=Host.alloc_vcpus + vcpus,
            alloc_memory_mib=Host.alloc_memory_mib + memory_mib,
            alloc_disk_gib=Host.alloc_disk_gib + disk_gib,
        )
        .execution_options(synchronize_session=False)
    )
    return bool(changed.rowcount == 1)  # type: ignore[attr-defined]


def release(
    session: Session,
    host_id: str,
    vcpus: int,
    memory_mib: int,
    disk_gib: int,
    instances: int = 1,
) -> None:
    """Take back what an instance (``instances=0``: part of one) claimed on the host."""
    session.execute(
        update(Host)
        .where(Host.id == host_id)
        .values(
            alloc_vcpus=Host.alloc_vcpus - vcpus,
            alloc_memory_mib=Host.alloc_memory_mib - memory_mib,
            alloc_disk_gib=Host.alloc_disk_gib - disk_gib,
            instance_count=Host.instance_count - instances,
        )
        .execution_options(synchronize_session=False)
    )


def heal(session: Session) -> None:
    """Recompute every host's counters from the instances placed on it (and the targets
    of migrations still to run). Run at start-up, after recovery. The hosts' rows are
    locked first (PostgreSQL): a placement another controller makes meanwhile waits,
    then is counted (it changes its host's row in the transaction that places it)."""
    session.execute(select(Host.id).order_by(Host.id).with_for_update())
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
    counted = {
        host_id: [int(row.vcpus), int(row.memory), int(row.disk), int(row.count)]
        for host_id, row in totals.items()
    }
    # a migration not yet done holds a claim on its target too (made when it was asked)
    pending = session.execute(
        select(Task.params, Instance.vcpus, Instance.memory_mib, Instance.disk_gib)
        .join(Instance, Instance.id == Task.resource_id)
        .where(
            Task.kind == "instance.migrate",
            Task.status.in_((TaskStatus.QUEUED, TaskStatus.RUNNING)),
        )
    ).all()
    for params, vcpus, memory, disk in pending:
        target = (params or {}).get("target_host_id")
        if target:
            row = counted.setdefault(target, [0, 0, 0, 0])
            row[0] += vcpus
            row[1] += memory
            row[2] += disk
            row[3] += 1
    for host in session.scalars(select(Host)).all():
        host.alloc_vcpus, host.alloc_memory_mib, host.alloc_disk_gib, host.instance_count = (
            counted.get(host.id, [0, 0, 0, 0])
        )
