"""Monitoring: metric series of instances and hosts, and the event stream."""

from __future__ import annotations

import time
from datetime import datetime

from fastapi import APIRouter, Query
from pydantic import BaseModel

from nubis.api.deps import PageDep, PlatformDep, PrincipalDep
from nubis.api.monitoring_schemas import EventOut, SeriesOut
from nubis.api.schemas import PageOut
from nubis.db.models import Host
from nubis.services.core import events
from nubis.services.core.lookup import get_by_id_or_name
from nubis.services.monitoring import metrics, webhooks
from nubis.services.monitoring.metrics import Kind

router = APIRouter(tags=["monitoring"])
DEFAULT_RANGE = 3600


def _series(
    platform: PlatformDep,
    kind: Kind,
    resource_id: str,
    since: datetime | None,
    until: datetime | None,
    names: str | None,
) -> SeriesOut:
    end = int(until.timestamp()) if until else int(time.time()) + 1
    start = int(since.timestamp()) if since else end - DEFAULT_RANGE
    wanted = [m.strip() for m in names.split(",") if m.strip()] if names else None
    with platform.db.begin() as s:
        found = metrics.series(s, kind, resource_id, start, end, wanted, platform.retention)
    return SeriesOut(
        resource_id=resource_id,
        resolution=found.resolution,
        step=found.step,
        since=found.since,
        until=found.until,
        units={m: kind.metrics[m] for m in found.columns if m != "ts"},
        series=found.columns,
    )


@router.get("/instances/{ref}/metrics")
def instance_metrics(
    ref: str,
    platform: PlatformDep,
    principal: PrincipalDep,
    since: datetime | None = None,
    until: datetime | None = None,
    metrics_: str | None = Query(default=None, alias="metrics", max_length=512),
) -> SeriesOut:
    """The instance's samples from ``since`` (default: an hour ago) to ``until``
    (default: now), at the finest resolution that fits (at most 1,500 points);
    ``metrics``: a comma-separated subset."""
    with platform.db.read() as s:
        instance_id = platform.instances.get(s, principal, ref).id
    return _series(platform, metrics.INSTANCES, instance_id, since, until, metrics_)


@router.get("/hosts/{ref}/metrics")
def host_metrics(
    ref: str,
    platform: PlatformDep,
    _p: PrincipalDep,
    since: datetime | None = None,
    until: datetime | None = None,
    metrics_: str | None = Query(default=None, alias="metrics", max_length=512),
) -> SeriesOut:
    """The host's samples (CPU, memory used and allocated, its disk pool)."""
    with platform.db.read() as s:
        host_id = get_by_id_or_name(s, Host, ref, "host").id
    return _series(platform, metrics.HOSTS, host_id, since, until, metrics_)


@router.get("/events")
def list_events(
    platform: PlatformDep,
    principal: PrincipalDep,
    pages: PageDep,
    resource_id: str | None = None,
    kind: str | None = None,
    severity: str | None = None,
    since: datetime | None = None,
) -> PageOut[EventOut]:
    """What happened in the caller's project (everything, for the system
    administrator); ``sort=-created_at`` for the newest first."""
    with platform.db.read() as s:
        page = events.search(s, principal, pages, resource_id, kind, severity, since)
        return PageOut.of(page, EventOut)


class AllowlistIO(BaseModel):
    """Networks alarm webhooks may go to although they are not public (CIDRs)."""

    networks: list[str]


@router.get("/webhook-allowlist", tags=["alarms"])
def get_webhook_allowlist(platform: PlatformDep, _p: PrincipalDep) -> AllowlistIO:
    return AllowlistIO(networks=webhooks.allowed_networks(platform.db))


@router.put("/webhook-allowlist", tags=["alarms"])
def set_webhook_allowlist(
    body: AllowlistIO, platform: PlatformDep, _p: PrincipalDep
) -> AllowlistIO:
    """Replace the allow-list (system administrator): webhooks to loopback, private
    ranges or a host's address are refused unless their network is on it."""
    return AllowlistIO(networks=webhooks.set_allowed(platform.db, body.networks))
