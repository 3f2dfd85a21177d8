"""Per-project quotas, checked atomically when something is created.

Usage is counted from the resources themselves (never a counter that can drift).
``claim`` first bumps the project's ``quota_serial``: the row lock that takes (on
PostgreSQL; SQLite transactions are serialised anyway) makes parallel creates in a
project wait for each other, so each counts what the ones before it committed and
no two of them can both take the last unit of a quota. A create that asks only for
what is unlimited counts nothing and takes no lock.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from nubis.db.models import (
    FloatingIP,
    Image,
    Instance,
    Network,
    Project,
    Quota,
    Router,
    Snapshot,
    Volume,
    VolumeSnapshot,
)
from nubis.services.core.errors import BadRequest, Conflict, NotFoundError

UNLIMITED = -1
DEFAULTS: dict[str, int] = {
    "instances": 20,
    "vcpus": 40,
    "memory_mib": 80 * 1024,
    "volumes": 20,
    "volume_gib": 1000,
    "snapshots": 50,
    "networks": 10,
    "images": 20,
    "image_gib": 200,
    "routers": 10,
    "floating_ips": 50,
}
GIB = 1024**3
RESOURCES = tuple(DEFAULTS)


# what each quota counts: (model, column summed) pairs; no column: rows are counted
MEASURES: dict[str, tuple[tuple[Any, Any], ...]] = {
    "instances": ((Instance, None),),
    "vcpus": ((Instance, Instance.vcpus),),
    "memory_mib": ((Instance, Instance.memory_mib),),
    "volumes": ((Volume, None),),
    "volume_gib": ((Volume, Volume.size_gib),),
    "snapshots": ((Snapshot, None), (VolumeSnapshot, None)),
    "networks": ((Network, None),),
    "images": ((Image, None),),
    # each image's data in whole GiB, rounded up (as a claim counts it)
    "image_gib": ((Image, (Image.size + (GIB - 1)) // GIB),),
    "routers": ((Router, None),),
    "floating_ips": ((FloatingIP, None),),
}


def usage(
    session: Session, project_id: str, resources: Iterable[str] = RESOURCES
) -> dict[str, int]:
    """What the project uses of each of ``resources``, counted from the rows."""
    used = {}
    for resource in resources:
        total = 0
        for model, column in MEASURES[resource]:
            measure = func.count() if column is None else func.sum(column)
            query = select(measure).select_from(model).where(model.project_id == project_id)
            total += int(session.scalar(query) or 0)
        used[resource] = total
    return used


def limits(session: Session, project_id: str) -> dict[str, int]:
    rows = session.scalars(select(Quota).where(Quota.project_id == project_id))
    return {**DEFAULTS, **{q.resource: q.limit for q in rows}}


def report(session: Session, project_id: str) -> dict[str, dict[str, int]]:
    used = usage(session, project_id)
    limit = limits(session, project_id)
    return {r: {"limit": limit[r], "in_use": used[r]} for r in RESOURCES}


def set_limits(session: Session, project_id: str, changes: dict[str, int]) -> None:
    """Set limits (``-1``: unlimited). A limit below what is in use is allowed: it only
    stops new creates."""
    for resource, value in changes.items():
        if resource not in DEFAULTS:
            raise BadRequest(f"unknown quota {resource!r}; known: {', '.join(RESOURCES)}")
        if not isinstance(value, int) or value < UNLIMITED:
            raise BadRequest(f"quota {resource} must be -1 (unlimited) or a count >= 0")
    for resource, value in changes.items():
        row = session.get(Quota, (project_id, resource))
        if row is None:
            session.add(Quota(project_id=project_id, resource=resource, limit=value))
        else:
            row.limit = value
    session.flush()


def claim(session: Session, project_id: str, wants: dict[str, int]) -> None:
    """Refuse (409) a create that would take the project over a quota. Call inside the
    transaction that inserts the new rows, before inserting them.

    What is asked only of unlimited quotas needs no count, so it takes no lock: the
    project's creates then run side by side (a limit set meanwhile stops the creates
    that start after it, as a limit below what is in use does)."""
    wanted = {r: n for r, n in wants.items() if n > 0}
    if wanted and all(
        v == UNLIMITED for r, v in limits(session, project_id).items() if r in wanted
    ):
        if session.get(Project, project_id) is None:
            raise NotFoundError(f"project {project_id!r} not found")
        return
    locked = session.execute(
        update(Project)
        .where(Project.id == project_id)
        .values(quota_serial=Project.quota_serial + 1)
    )
    if locked.rowcount != 1:  # type: ignore[attr-defined]
        raise NotFoundError(f"project {project_id!r} not found")
    if not wanted:
        return
    used = usage(session, project_id, wanted)
    limit = limits(session, project_id)
    over = [
        f"{r}: {used[r]} in use + {n} asked > limit {limit[r]}"
        for r, n in wanted.items()
        if limit[r] != UNLIMITED and used[r] + n > limit[r]
    ]
    if over:
        raise Conflict("quota exceeded (" + "; ".join(over) + ")")
