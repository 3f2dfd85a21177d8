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
from nubis.services.errors import BadRequest

SECRET_WORDS = ("password", "secret", "token", "private_key", "signature", "user_data")
REDACTED = "***"
MAX_VALUE_CHARS = 1024
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


def export(session: Session, query: AuditQuery, fmt: str) -> Iterator[str]:
    """The matching records, oldest first, as CSV (one header line) or JSON lines."""
    export_format(fmt)
    stmt = search(query).order_by(AuditRecord.created_at, AuditRecord.id)
    rows = session.scalars(stmt.execution_options(yield_per=500))
    if fmt == "json":
        for record in rows:
            yield json.dumps(as_dict(record)) + "\n"
        return
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=EXPORT_FIELDS)
    writer.writeheader()
    for record in rows:
        row = as_dict(record)
        row["params"] = json.dumps(row["params"]) if row["params"] is not None else ""
        writer.writerow(row)
        yield buf.getvalue()
        buf.seek(0)
        buf.truncate()
    yield buf.getvalue()


def prune(session: Session, retention_days: int) -> int:
    """Remove records older than the retention; returns how many went."""
    cutoff = utcnow() - timedelta(days=retention_days)
    result = session.execute(delete(AuditRecord).where(AuditRecord.created_at < cutoff))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
