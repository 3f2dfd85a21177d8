"""Finding rows by id or name, and paginated listing: shared by every resource service."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from nubis.services.errors import BadRequest, Conflict, NotFoundError

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


@dataclass
class Page:
    items: list[Any]
    total: int
    limit: int
    offset: int


def paginate(
    session: Session,
    query: Select,
    model: type,
    limit: int = 100,
    offset: int = 0,
    marker: str | None = None,
) -> Page:
    """Page through ``query`` ordered by creation; ``marker`` = id of the last item seen."""
    if limit < 1 or limit > MAX_LIMIT:
        raise BadRequest(f"limit must be between 1 and {MAX_LIMIT}")
    if offset < 0:
        raise BadRequest("offset must not be negative")
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    ordered = query.order_by(model.created_at, model.id)
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
