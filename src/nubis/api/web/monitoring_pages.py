"""Monitoring pages: events, alarm rules, and the usage and cost of a project."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select

from nubis.api.deps import PlatformDep
from nubis.api.monitoring_schemas import EventOut
from nubis.api.routers import alarms, usage
from nubis.api.schemas import PageOut
from nubis.api.web.pages import Offset, paged
from nubis.api.web.render import Me, can, page
from nubis.db.models import Project, utcnow
from nubis.services.core import events
from nubis.services.monitoring import overview
from nubis.services.monitoring.alarms import metrics_by_kind as alarm_metrics
from nubis.services.monitoring.metering import METRICS

router = APIRouter(include_in_schema=False)


@router.get("/events")
def event_list(
    request: Request,
    platform: PlatformDep,
    me: Me,
    offset: int = Offset,
    severity: str = Query(default="", max_length=8),
) -> HTMLResponse:
    def load() -> dict[str, Any]:
        with platform.db.read() as s:
            page = events.search(s, me, paged(offset, "-created_at"), severity=severity or None)
            return {"page": PageOut.of(page, EventOut), "severity": severity}

    return page(request, me, "GET /events", "events.html", load)


@router.get("/alarms")
def alarm_list(
    request: Request, platform: PlatformDep, me: Me, offset: int = Offset
) -> HTMLResponse:
    def load() -> dict[str, Any]:
        found = alarms.list_alarms(platform, me, paged(offset, "name"))
        with platform.db.read() as s:
            names = overview.resource_names(s, me, [a.resource_id for a in found.items])
        return {"page": found, "names": names, "metrics": alarm_metrics()}

    return page(request, me, "GET /alarms", "alarms.html", load)


@router.get("/usage")
def usage_page(
    request: Request,
    platform: PlatformDep,
    me: Me,
    month: str = Query(default="", max_length=7),
    project: str = Query(default="", max_length=64),
) -> HTMLResponse:
    def load() -> dict[str, Any]:
        chosen = month or utcnow().strftime("%Y-%m")
        report = usage.project_report(platform, me, project or None, chosen)
        projects = []
        if me.all_projects:
            with platform.db.read() as s:
                projects = list(s.scalars(select(Project.name).order_by(Project.name)))
        peak = max((cost for _day, cost in report.daily), default=0)
        return {
            "report": report,
            "month": chosen,
            "projects": projects,
            "peak": peak,
            "rates": usage.list_rates(platform, me) if can(me, "GET /rates") else [],
            "metrics": list(METRICS),
        }

    return page(request, me, "GET /usage/report", "usage.html", load)
