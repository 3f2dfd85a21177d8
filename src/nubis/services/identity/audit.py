"""The audit log: append-only records of every change and every login attempt.

Nothing in the API updates or deletes a record; ``prune`` (run by the platform on
its schedule) removes records older than the retention the operator configured.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, delete, select
from sqlalchemy.orm import Session

from nubis.db.models import AuditRecord, utcnow
from nubis.db.session import Database
from nubis.services.core.errors import BadRequest

SECRET_WORDS = ("password", "secret", "token", "private_key", "signature", "user_data")
REDACTED = "***"
MAX_VALUE_CHARS = 1024
EXPORT_PAGE = 500
EXPORT_FIELDS = (
    "id",
    "created_at",
    "username",
    "user_id",
    "project_id",
    "roles",
    "api_key_id",
    "action",
    "method",
    "path",
    "resource_type",
    "resource_id",
    "params",
    "source_ip",
    "success",
    "status_code",
)


def redact(value: Any) -> Any:
    """Request parameters with every secret-looking field replaced and long values cut."""
    if isinstance(value, dict):
        return {
            k: REDACTED if any(w in str(k).lower() for w in SECRET_WORDS) else redact(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v) for v in value[:100]]
    if isinstance(value, str) and len(value) > MAX_VALUE_CHARS:
        return value[:MAX_VALUE_CHARS] + "..."
    return value


MAX_PARAMS_CHARS = 4096  # of an audited request's parameters, as JSON
MAX_DEPTH = 4
MAX_KEYS = 50


def bounded(value: Any, depth: int = 0) -> Any:
    """Request parameters cut to a bounded size: at most ``MAX_KEYS`` keys or items per
    level, ``MAX_DEPTH`` levels, ``MAX_PARAMS_CHARS`` characters as JSON in all (past
    that, a note of how long they were)."""
    if isinstance(value, dict):
        if depth >= MAX_DEPTH:
            return "{...}"
        items = list(value.items())
        out: Any = {str(k)[:64]: bounded(v, depth + 1) for k, v in items[:MAX_KEYS]}
        if len(items) > MAX_KEYS:
            out["..."] = f"{len(items) - MAX_KEYS} more keys"
    elif isinstance(value, list):
        if depth >= MAX_DEPTH:
            return "[...]"
        out = [bounded(v, depth + 1) for v in value[:MAX_KEYS]]
    else:
        out = value
    if depth == 0:
        text = json.dumps(out, default=str)
        if len(text) > MAX_PARAMS_CHARS:
            return {"truncated": f"{len(text)} characters of parameters, not kept"}
    return out


@dataclass(frozen=True)
class AuditQuery:
    username: str | None = None
    action: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    success: bool | None = None
    since: datetime | None = None
    until: datetime | None = None


def search(query: AuditQuery) -> Select[tuple[AuditRecord]]:
    stmt = select(AuditRecord)
    if query.since and query.until and query.since > query.until:
        raise BadRequest("since must not be after until")
    for column, value in (
        (AuditRecord.username, query.username),
        (AuditRecord.resource_type, query.resource_type),
        (AuditRecord.resource_id, query.resource_id),
        (AuditRecord.success, query.success),
    ):
        if value is not None:
            stmt = stmt.where(column == value)
    if query.action:
        stmt = stmt.where(AuditRecord.action.contains(query.action, autoescape=True))
    if query.since:
        stmt = stmt.where(AuditRecord.created_at >= query.since)
    if query.until:
        stmt = stmt.where(AuditRecord.created_at <= query.until)
    return stmt


def as_dict(record: AuditRecord) -> dict[str, Any]:
    out = {f: getattr(record, f) for f in EXPORT_FIELDS}
    out["created_at"] = record.created_at.isoformat()
    return out


def export_format(fmt: str) -> None:
    if fmt not in ("csv", "json"):
        raise BadRequest("format must be csv or json")


def export(db: Database, query: AuditQuery, fmt: str) -> Iterator[str]:
    """The matching records, oldest first, as CSV (one header line) or JSON lines.
    Read a page at a time, each in its own short read transaction: a slow client
    holds no transaction open."""
    export_format(fmt)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=EXPORT_FIELDS)
        writer.writeheader()
        yield buf.getvalue()
    for record in _pages(db, search(query)):
        row = as_dict(record)
        if fmt == "json":
            yield json.dumps(row) + "\n"
            continue
        row["params"] = json.dumps(row["params"]) if row["params"] is not None else ""
        buf.seek(0)
        buf.truncate()
        writer.writerow({k: _cell(v) for k, v in row.items()})
        yield buf.getvalue()


# a spreadsheet runs a cell that begins with one of these as a formula (CSV injection)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    """A CSV cell a spreadsheet shows as text: a leading formula character is quoted."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def _pages(db: Database, stmt: Select[tuple[AuditRecord]]) -> Iterator[AuditRecord]:
    """Every record of ``stmt``, oldest first, read ``EXPORT_PAGE`` at a time after the
    last one seen (created_at, id)."""
    after: tuple[datetime, str] | None = None
    while True:
        page = stmt.order_by(AuditRecord.created_at, AuditRecord.id).limit(EXPORT_PAGE)
        if after is not None:
            at, last = after
            page = page.where(
                (AuditRecord.created_at > at)
                | ((AuditRecord.created_at == at) & (AuditRecord.id > last))
            )
        with db.read() as s:
            records = list(s.scalars(page))
        yield from records
        if len(records) < EXPORT_PAGE:
            return
        after = (records[-1].created_at, records[-1].id)


def prune(session: Session, retention_days: int) -> int:
    """Remove records older than the retention; returns how many went."""
    cutoff = utcnow() - timedelta(days=retention_days)
    result = session.execute(delete(AuditRecord).where(AuditRecord.created_at < cutoff))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
