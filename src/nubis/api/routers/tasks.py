"""Tasks: the durable record of every long operation."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select

from nubis.api.deps import PlatformDep, PrincipalDep
from nubis.api.schemas import PageOut, TaskOut
from nubis.db.models import Task
from nubis.services.errors import NotFoundError
from nubis.services.lookup import paginate

router = APIRouter(prefix="/tasks", tags=["tasks"])


@router.get("")
def list_tasks(
    platform: PlatformDep,
    principal: PrincipalDep,
    limit: int = 100,
    offset: int = 0,
    marker: str | None = None,
    status: str | None = None,
    resource_id: str | None = None,
) -> PageOut[TaskOut]:
    query = select(Task)
    if principal.system_role != "admin":
        query = query.where(Task.project_id == principal.project_id)
    if status:
        query = query.where(Task.status == status)
    if resource_id:
        query = query.where(Task.resource_id == resource_id)
    with platform.db.begin() as s:
        page = paginate(s, query, Task, limit, offset, marker)
        return PageOut[TaskOut](
            items=[TaskOut.model_validate(t) for t in page.items],
            total=page.total,
            limit=page.limit,
            offset=page.offset,
        )


@router.get("/{task_id}")
def get_task(task_id: str, platform: PlatformDep, principal: PrincipalDep) -> TaskOut:
    with platform.db.begin() as s:
        task = s.get(Task, task_id)
        if task is None or (
            principal.system_role != "admin" and task.project_id != principal.project_id
        ):
            raise NotFoundError(f"task {task_id!r} not found")
        return TaskOut.model_validate(task)
