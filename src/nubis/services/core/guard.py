"""The one compare-and-swap guard: a row is marked busy (its ``task_state``) only while
it is idle and in a state that allows the operation, by a single conditional
``UPDATE`` that two concurrent callers cannot both win.

Instances, volumes, volume snapshots, the state sync and HA all take their rows this
way; the task that does the work clears ``task_state`` when it ends."""

from __future__ import annotations

from typing import Any, Protocol

from sqlalchemy import ColumnElement, update
from sqlalchemy.orm import Session

from nubis.db.session import changed_one
from nubis.services.core.errors import Conflict


class Guarded(Protocol):
    """A row with a name, a status and a task state (Instance, Volume, VolumeSnapshot)."""

    id: Any
    name: Any
    status: Any
    task_state: Any


def swap(
    session: Session, model: type[Any], row_id: str, *conditions: ColumnElement[bool], **values: Any
) -> bool:
    """Set ``values`` on row ``row_id`` of ``model`` if it is idle and every one of
    ``conditions`` holds; True if this caller won it."""
    statement = (
        update(model)
        .where(model.id == row_id, model.task_state.is_(None), *conditions)
        .values(**values)
    )
    return changed_one(session, statement)


def swap_all(
    session: Session,
    model: type[Any],
    row_ids: list[str],
    *conditions: ColumnElement[bool],
    **values: Any,
) -> list[str]:
    """``swap`` on many rows in one statement: the ids of those this caller won."""
    statement = (
        update(model)
        .where(model.id.in_(row_ids), model.task_state.is_(None), *conditions)
        .values(**values)
        .returning(model.id)
        .execution_options(synchronize_session=False)
    )
    return list(session.scalars(statement).all())


def claim(
    session: Session,
    row: Guarded,
    allowed: tuple[str, ...] | None,
    task_state: str,
    what: str,
    new_status: str | None = None,
) -> None:
    """Mark ``row`` busy with ``task_state`` (and ``new_status``) if it is idle and its
    status is one of ``allowed`` (any when None); a clear 409 saying why otherwise.
    The row is refreshed either way."""
    model = type(row)
    conditions = [] if allowed is None else [model.status.in_(allowed)]
    values: dict[str, str] = {"task_state": task_state}
    if new_status:
        values["status"] = new_status
    won = swap(session, model, row.id, *conditions, **values)
    session.refresh(row)
    if won:
        return
    if row.task_state is not None:
        raise Conflict(
            f"{what} {row.name!r} is busy ({row.task_state}); wait for that operation to finish"
        )
    assert allowed is not None
    raise Conflict(
        f"{what} {row.name!r} is {row.status}; this needs it to be {' or '.join(allowed)}"
    )
