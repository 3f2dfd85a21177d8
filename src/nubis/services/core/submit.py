"""Queueing a task on behalf of a caller (the one way services hand work to the
engine), and asking one to stop."""

from __future__ import annotations

from sqlalchemy.orm import Session

from nubis.db.models import Task, TaskStatus
from nubis.services.core.errors import Conflict, NotFoundError
from nubis.services.core.principal import Principal
from nubis.tasks.engine import TaskEngine


def submit_task(
    engine: TaskEngine,
    session: Session,
    principal: Principal | None,
    kind: str,
    resource_type: str,
    resource_id: str,
    params: dict[str, object] | None = None,
) -> Task:
    """Queue ``kind`` on the resource in the caller's transaction (workers wake when
    it commits), recorded with the caller's project and user."""
    task = engine.submit(
        session,
        kind,
        resource_type,
        resource_id,
        params=params,
        project_id=principal.project_id if principal else None,
        user_id=principal.user_id if principal else None,
    )
    session.flush()
    return task


def cancel_task(engine: TaskEngine, session: Session, principal: Principal, task_id: str) -> Task:
    """Ask the caller's queued or running task to stop: its handler stops at its next
    step or progress report and undoes what it did (the task then fails, "cancelled").
    A clear 409 when the task has ended or its kind cannot be stopped half-way."""
    task = session.get(Task, task_id)
    if task is None or not principal.owns(task.project_id):
        raise NotFoundError(f"task {task_id!r} not found")
    if task.status not in (TaskStatus.QUEUED, TaskStatus.RUNNING):
        raise Conflict(f"task {task_id} has ended ({task.status})")
    if not getattr(engine.handlers.get(task.kind), "cancellable", False):
        raise Conflict(f"a {task.kind} task cannot be cancelled")
    task.cancel_requested = True
    session.flush()
    return task
