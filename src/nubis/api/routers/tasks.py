"""Tasks: the durable record of every long operation."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select

from nubis.api.deps import PageDep, PlatformDep, PrincipalDep
from nubis.api.schemas import PageOut, TaskOut
from nubis.db.models import Task
from nubis.services.core.errors import NotFoundError
from nubis.services.core.lookup import paginate
from nubis.services.core.submit import cancel_task

router = APIRouter(prefix="/tasks", tags=["tasks"])


@router.get("")
def list_tasks(
    platform: PlatformDep,
    principal: PrincipalDep,
    pages: PageDep,
    status: str | None = None,
    resource_id: str | None = None,
) -> PageOut[TaskOut]:
    query = select(Task).filter_by(**principal.scope())
    if status:
        query = query.where(Task.status == status)
    if resource_id:
        query = query.where(Task.resource_id == resource_id)
    with platform.db.read() as s:
        page = paginate(s, query, Task, pages)
        return PageOut.of(page, TaskOut)


@router.get("/{task_id}")
def get_task(task_id: str, platform: PlatformDep, principal: PrincipalDep) -> TaskOut:
    with platform.db.read() as s:
        task = s.get(Task, task_id)
        if task is None or not principal.owns(task.project_id):
            raise NotFoundError(f"task {task_id!r} not found")
        return TaskOut.model_validate(task)


@router.post("/{task_id}/actions/cancel", status_code=202)
def cancel(task_id: str, platform: PlatformDep, principal: PrincipalDep) -> TaskOut:
    """Ask a task to stop (a volume move, say): it stops at its next step or progress
    report, undoes what it did and fails with "cancelled on request". 409 when it has
    ended or cannot be stopped half-way."""
    with platform.db.begin() as s:
        return TaskOut.model_validate(cancel_task(platform.engine, s, principal, task_id))
