"""The event stream: what happened, per project (infrastructure events belong to no
project and are seen by the system administrator). Written in the transaction of
the change they describe where there is one; removed after the retention time."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from nubis.db.models import Instance, InstanceStatus, Task, TaskStatus, utcnow
from nubis.db.models.monitoring import Event
from nubis.db.session import Database
from nubis.services.core.errors import BadRequest
from nubis.services.core.lookup import Page, PageRequest, paginate
from nubis.services.core.principal import Principal

SEVERITIES = ("info", "warning", "error")


def record(
    session: Session,
    kind: str,
    message: str,
    resource_type: str,
    resource_id: str,
    *,
    severity: str = "info",
    project_id: str | None = None,
    resource_name: str | None = None,
) -> Event:
    event = Event(
        kind=kind,
        message=message[:2000],
        resource_type=resource_type,
        resource_id=resource_id,
        resource_name=resource_name,
        severity=severity,
        project_id=project_id,
    )
    session.add(event)
    return event


def instance_state(session: Session, instance: Instance, state: str, why: str) -> None:
    record(
        session,
        "instance.state",
        f"instance {instance.name} is now {state} ({why})",
        "instance",
        instance.id,
        severity="error" if state == InstanceStatus.ERROR else "info",
        project_id=instance.project_id,
        resource_name=instance.name,
    )


def task_finished(db: Database, task_id: str, status: str) -> None:
    """A listener of the task engine: every finished task is an event (failures as
    errors), named after the resource it worked on."""
    with db.begin() as s:
        task = s.get(Task, task_id)
        if task is None:
            return
        name = None
        if task.resource_type == "instance":
            name = s.scalar(select(Instance.name).where(Instance.id == task.resource_id))
        what = f"{task.resource_type} {name or task.resource_id}"
        message = f"{task.kind} {status} for {what}"
        if task.error:
            message += f": {task.error}"
        record(
            s,
            f"task.{status}",
            message,
            task.resource_type[:16],
            task.resource_id,
            severity="error" if status == TaskStatus.FAILED else "info",
            project_id=task.project_id,
            resource_name=name,
        )


def search(
    session: Session,
    principal: Principal,
    pages: PageRequest,
    resource_id: str | None = None,
    kind: str | None = None,
    severity: str | None = None,
    since: datetime | None = None,
) -> Page:
    query = select(Event)
    if not principal.all_projects:
        query = query.where(Event.project_id == principal.project_id)
    if resource_id:
        query = query.where(Event.resource_id == resource_id)
    if kind:
        query = query.where(Event.kind == kind)
    if severity:
        if severity not in SEVERITIES:
            raise BadRequest(f"severity must be one of {', '.join(SEVERITIES)}")
        query = query.where(Event.severity == severity)
    if since is not None:
        query = query.where(Event.created_at >= since)
    return paginate(session, query, Event, pages)


def prune(session: Session, retention_days: int) -> int:
    cutoff = utcnow() - timedelta(days=retention_days)
    result = session.execute(delete(Event).where(Event.created_at < cutoff))
    return max(result.rowcount or 0, 0)  # type: ignore[attr-defined]
