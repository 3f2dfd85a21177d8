"""Finding rows by id or name, and paginated listing: shared by every resource service."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from nubis.db.session import Database
from nubis.services.core.errors import BadRequest, Conflict, NotFoundError

M = TypeVar("M")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_LIMIT = 1000


def get_by_id_or_name(session: Session, model: type[M], ref: str, what: str, **scope: Any) -> M:
    """The row whose id is ``ref``, else the one named ``ref`` within ``scope``; 404
    otherwise, 409 when the name is ambiguous (several projects in scope use it)."""
    if not isinstance(ref, str) or not ref:
        raise BadRequest(f"{what} must be given by id or name")
    query = select(model).filter_by(**scope)
    row = session.scalars(query.where(model.id == ref)).first()  # type: ignore[attr-defined]
    if row is not None:
        return row
    named = session.scalars(query.where(model.name == ref).limit(2)).all()  # type: ignore[attr-defined]
    if not named:
        raise NotFoundError(f"{what} {ref!r} not found")
    if len(named) > 1:
        raise Conflict(f"several {what}s are named {ref!r}: give the id")
    return named[0]


def reread(db: Database, model: type[M], row_id: str, what: str) -> M:
    """The row as the database holds it now, detached from its session; 404 when it is
    gone (deleted by another request since)."""
    with db.read() as s:
        row = s.get(model, row_id)
        if row is None:
            raise NotFoundError(f"the {what} is gone")
        s.expunge(row)
        return row


@dataclass(frozen=True)
class PageRequest:
    """Which page of a list: ``limit`` rows after ``offset`` (or after ``marker``, the id
    of the last row seen), ordered by ``sort`` (a column, ``-`` first for descending;
    default: creation)."""

    limit: int = 100
    offset: int = 0
    marker: str | None = None
    sort: str | None = None


SORTABLE = ("name", "username", "status", "state", "kind", "created_at")


def _order(model: type, sort: str | None, marker: str | None) -> list[Any]:
    default = [model.created_at, model.id]  # type: ignore[attr-defined]
    if not sort:
        return default
    field = sort.removeprefix("-")
    column = getattr(model, field, None) if field in SORTABLE else None
    if column is None:
        allowed = ", ".join(f for f in SORTABLE if hasattr(model, f))
        raise BadRequest(f"sort must be one of {allowed} (with '-' for descending)")
    if marker is not None:
        raise BadRequest("marker pages in creation order: use offset with sort")
    if sort.startswith("-"):  # ties in the same direction: one index scan serves it
        return [column.desc(), *(c.desc() for c in default)]
    return [column.asc(), *default]


@dataclass
class Page:
    items: list[Any]
    total: int
    limit: int
    offset: int


def paginate(
    session: Session,
    query: Select[Any],
    model: type,
    pages: PageRequest = PageRequest(),
) -> Page:
    """One page of ``query`` (see ``PageRequest``)."""
    limit, offset, marker = pages.limit, pages.offset, pages.marker
    if limit < 1 or limit > MAX_LIMIT:
        raise BadRequest(f"limit must be between 1 and {MAX_LIMIT}")
    if offset < 0:
        raise BadRequest("offset must not be negative")
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    ordered = query.order_by(*_order(model, pages.sort, marker))
    if marker is not None:
        last = session.get(model, marker)
        if last is None:
            raise BadRequest(f"marker {marker!r} is not a known id")
        ordered = ordered.where(
            (model.created_at > last.created_at)
            | ((model.created_at == last.created_at) & (model.id > last.id))
        )
    items = list(session.scalars(ordered.offset(offset).limit(limit)).all())
    return Page(items=items, total=total, limit=limit, offset=offset)


def validate_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise BadRequest(
            f"{what} name must be 1-64 characters: letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name
