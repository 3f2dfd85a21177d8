"""The audit log: search and export (auditor). Nothing here changes a record."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse

from nubis.api.deps import PageDep, PlatformDep, PrincipalDep
from nubis.api.identity_schemas import AuditOut
from nubis.api.schemas import PageOut
from nubis.db.models import AuditRecord
from nubis.services.core.lookup import paginate
from nubis.services.identity import audit
from nubis.services.identity.audit import AuditQuery

router = APIRouter(prefix="/audit", tags=["audit"])


def audit_query(
    username: str | None = None,
    action: str | None = None,
    resource_type: str | None = None,
    resource_id: str | None = None,
    success: bool | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> AuditQuery:
    return AuditQuery(username, action, resource_type, resource_id, success, since, until)


QueryDep = Annotated[AuditQuery, Depends(audit_query)]


@router.get("")
def search(
    platform: PlatformDep, _p: PrincipalDep, pages: PageDep, query: QueryDep
) -> PageOut[AuditOut]:
    """Records matching every filter given (``action`` matches a part), oldest first."""
    with platform.db.read() as s:
        stmt = audit.search(query)
        page = paginate(s, stmt, AuditRecord, pages)
        return PageOut.of(page, AuditOut)


@router.get("/export")
def export(
    platform: PlatformDep, _p: PrincipalDep, query: QueryDep, format: str = "csv"
) -> StreamingResponse:
    """Every matching record as CSV or JSON lines, streamed."""
    audit.export_format(format)

    media = "text/csv" if format == "csv" else "application/x-ndjson"
    name = f"nubis-audit.{'csv' if format == 'csv' else 'jsonl'}"
    return StreamingResponse(
        audit.export(platform.db, query, format),
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
