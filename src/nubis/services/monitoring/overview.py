"""What the dashboard shows: counts by state, capacity per cluster, recent tasks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from nubis.db.models import Cluster, Host, Instance, Task, Volume
from nubis.db.models.monitoring import AlarmRule
from nubis.services.core.lookup import Page, PageRequest, paginate
from nubis.services.core.principal import Principal
from nubis.services.inventory import topology


@dataclass
class Counts:
    """How many of a kind there are, in all and by state."""

    total: int = 0
    by_state: dict[str, int] = field(default_factory=dict)


def _count(session: Session, model: type, column: Any, **scope: str) -> Counts:
    rows = session.execute(
        select(column, func.count()).select_from(model).filter_by(**scope).group_by(column)
    ).all()
    by_state = {str(state): int(n) for state, n in rows}
    return Counts(sum(by_state.values()), dict(sorted(by_state.items())))


def host_counts(session: Session) -> Counts:
    return _count(session, Host, Host.state)


def instance_counts(session: Session, principal: Principal) -> Counts:
    return _count(session, Instance, Instance.status, **principal.scope())


def volume_counts(session: Session, principal: Principal) -> Counts:
    return _count(session, Volume, Volume.status, **principal.scope())


def cluster_capacity(session: Session) -> list[tuple[str, dict[str, object]]]:
    """(cluster name, capacity) for every cluster with hosts."""
    hosts = session.scalars(select(Host).where(Host.cluster_id.is_not(None))).all()
    by_cluster: dict[str, list[Host]] = {}
    for host in hosts:
        by_cluster.setdefault(host.cluster_id or "", []).append(host)
    names = {cid: name for cid, name in session.execute(select(Cluster.id, Cluster.name))}
    return sorted(
        (names.get(cid, cid), topology.capacity(session, members))
        for cid, members in by_cluster.items()
    )


def recent_tasks(session: Session, principal: Principal, limit: int = 8) -> list[Task]:
    query = select(Task).filter_by(**principal.scope())
    return list(session.scalars(query.order_by(Task.created_at.desc()).limit(limit)).all())


def instances_on(session: Session, host_id: str, pages: PageRequest) -> Page:
    return paginate(session, select(Instance).where(Instance.host_id == host_id), Instance, pages)


def alarms_first(session: Session, principal: Principal, limit: int = 10) -> list[AlarmRule]:
    """The caller's alarm rules, those in alarm first."""
    query = select(AlarmRule).filter_by(**principal.scope())
    in_alarm = case((AlarmRule.state == "alarm", 0), else_=1)
    return list(session.scalars(query.order_by(in_alarm, AlarmRule.name).limit(limit)).all())


def resource_names(session: Session, principal: Principal, ids: list[str]) -> dict[str, str]:
    """Names of the instances (in the caller's scope) and hosts among ``ids``."""
    found = session.execute(
        select(Instance.id, Instance.name)
        .filter_by(**principal.scope())
        .where(Instance.id.in_(ids))
    ).all()
    names = {rid: name for rid, name in found}
    if principal.all_projects:
        hosts = session.execute(select(Host.id, Host.name).where(Host.id.in_(ids))).all()
        names.update({rid: name for rid, name in hosts})
    return names
