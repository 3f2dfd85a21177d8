"""Queueing a task on behalf of a caller: the one way services hand work to the engine."""

from __future__ import annotations

from sqlalchemy.orm import Session

from nubis.db.models import Task
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
