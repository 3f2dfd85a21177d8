"""Metering: the rating table and the monthly usage report of a project."""

from __future__ import annotations

from decimal import Decimal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field
from sqlalchemy import select

from nubis.api.deps import PlatformDep, PrincipalDep
from nubis.api.schemas import In, Out
from nubis.db.models import Project, utcnow
from nubis.db.models.metering import Rate
from nubis.services.core.errors import NotFoundError
from nubis.services.core.lookup import get_by_id_or_name
from nubis.services.monitoring import metering

router = APIRouter(tags=["metering"])


class RateIn(In):
    metric: str = Field(description=", ".join(metering.METRICS))
    dimension: str = Field(default="", max_length=64, description="a flavor name (instances)")
    price: Decimal = Field(description="per unit (hour or GiB-hour), up to 6 decimals")
    currency: str = Field(default="EUR", max_length=3)


class RateOut(Out):
    id: str
    metric: str
    dimension: str
    price: Decimal
    currency: str


class LineOut(BaseModel):
    metric: str
    dimension: str
    unit: str
    quantity: float
    unit_price: Decimal | None
    cost: Decimal


class ReportOut(BaseModel):
    project_id: str
    project: str
    month: str
    currency: str
    lines: list[LineOut]
    daily: list[tuple[str, Decimal]] = Field(description="(day, cost) for the days with usage")
    total: Decimal


@router.get("/rates")
def list_rates(platform: PlatformDep, _p: PrincipalDep) -> list[RateOut]:
    with platform.db.read() as s:
        rates = s.scalars(select(Rate).order_by(Rate.metric, Rate.dimension)).all()
        return [RateOut.model_validate(r) for r in rates]


@router.put("/rates")
def set_rate(body: RateIn, platform: PlatformDep, _p: PrincipalDep) -> RateOut:
    """Set the price of a metric (of one flavor, with ``dimension``); a flavor's own
    price comes before the metric's."""
    with platform.db.begin() as s:
        rate = metering.set_rate(s, body.metric, body.dimension, str(body.price), body.currency)
        return RateOut.model_validate(rate)


@router.delete("/rates/{rate_id}", status_code=204)
def delete_rate(rate_id: str, platform: PlatformDep, _p: PrincipalDep) -> Response:
    with platform.db.begin() as s:
        metering.delete_rate(s, rate_id)
    return Response(status_code=204)


def _report(
    platform: PlatformDep, principal: PrincipalDep, project: str | None, month: str | None
) -> tuple[str, metering.Report]:
    """The project's name and its report (the caller's project unless named)."""
    with platform.db.begin() as s:
        found = get_by_id_or_name(s, Project, project or principal.project_id, "project")
        if not principal.owns(found.id):
            raise NotFoundError(f"project {project!r} not found")
        return found.name, metering.report(s, found.id, month or utcnow().strftime("%Y-%m"))


def project_report(
    platform: PlatformDep, principal: PrincipalDep, project: str | None, month: str | None
) -> ReportOut:
    name, rep = _report(platform, principal, project, month)
    return ReportOut(
        project_id=rep.project_id,
        project=name,
        month=rep.month,
        currency=rep.currency,
        lines=[LineOut(**vars(line)) for line in rep.lines],
        daily=rep.daily,
        total=rep.total,
    )


@router.get("/usage/report", response_model=None)
def usage_report(
    platform: PlatformDep,
    principal: PrincipalDep,
    project: str | None = Query(default=None, max_length=64),
    month: str | None = Query(default=None, max_length=7, description="YYYY-MM (default: now)"),
    format: str = Query(default="json", pattern="^(json|csv)$"),
) -> ReportOut | Response:
    """What ``project`` (default: yours) used in ``month`` and what it costs: per
    metric and flavor, each line rounded to the cent, and per day."""
    if format == "json":
        return project_report(platform, principal, project, month)
    name, rep = _report(platform, principal, project, month)
    return Response(
        metering.report_csv(rep),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="usage-{name}-{rep.month}.csv"'},
    )
