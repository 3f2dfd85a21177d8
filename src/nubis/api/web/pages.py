"""The dashboard and the pages of hosts, images, flavors, volumes, networks,
projects and users."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from nubis.api.deps import PlatformDep
from nubis.api.routers import audit, flavors, hosts, images, networks, users, volumes
from nubis.api.schemas import HostOut, InstanceOut, PageOut, TaskOut
from nubis.api.web.render import Me, can, page
from nubis.db.models import Host, Instance
from nubis.services import events, overview
from nubis.services.auth import Principal
from nubis.services.lookup import PageRequest

router = APIRouter(include_in_schema=False)
PAGE_SIZE = 25
RECENT = PageRequest(limit=8, sort="-created_at")
Offset = Query(default=0, ge=0)


def paged(offset: int, sort: str | None = None) -> PageRequest:
    return PageRequest(limit=PAGE_SIZE, offset=offset, sort=sort)


@router.get("/dashboard")
def dashboard(request: Request, platform: PlatformDep, me: Me) -> HTMLResponse:
    def load() -> dict[str, Any]:
        with platform.db.begin() as s:
            return {
                "hosts": overview.host_counts(s) if can(me, "GET /hosts") else None,
                "instances": overview.instance_counts(s, me) if can(me, "GET /instances") else None,
                "volumes": overview.volume_counts(s, me) if can(me, "GET /volumes") else None,
                "capacity": overview.cluster_capacity(s)
                if can(me, "GET /clusters/{ref}/capacity")
                else [],
                "tasks": [TaskOut.model_validate(t) for t in overview.recent_tasks(s, me)]
                if can(me, "GET /tasks")
                else None,
                "alarms": overview.alarms_first(s, me) if can(me, "GET /alarms") else [],
                "recent_events": events.search(s, me, RECENT).items
                if can(me, "GET /events")
                else [],
                **_cpu_chart(s, me),
            }

    return page(request, me, "GET /auth/whoami", "dashboard.html", load)


def _cpu_chart(s: Session, me: Principal) -> dict[str, Any]:
    """The dashboard's CPU chart: the hosts for the system administrator, else the
    project's running instances (at most eight lines)."""
    if can(me, "GET /hosts/{ref}/metrics"):
        found = [(h.id, h.name) for h in s.scalars(select(Host).order_by(Host.name).limit(8))]
        kind, title = "hosts", "Hosts' CPU"
    elif can(me, "GET /instances/{ref}/metrics"):
        query = select(Instance).filter_by(**me.scope()).where(Instance.status == "running")
        found = [(i.id, i.name) for i in s.scalars(query.order_by(Instance.name).limit(8))]
        kind, title = "instances", "Instances' CPU"
    else:
        return {}
    series = [
        {"label": name, "src": f"/api/v1/{kind}/{rid}/metrics?metrics=cpu_pct", "metric": "cpu_pct"}
        for rid, name in found
    ]
    return {"cpu_series": series, "cpu_title": title}


def _listing(
    request: Request, me: Me, action: str, template: str, fetch: Callable[[], PageOut]
) -> HTMLResponse:
    return page(request, me, action, template, lambda: {"page": fetch()})


@router.get("/hosts")
def host_list(
    request: Request, platform: PlatformDep, me: Me, offset: int = Offset
) -> HTMLResponse:
    return _listing(
        request,
        me,
        "GET /hosts",
        "hosts.html",
        lambda: hosts.list_hosts(platform, me, paged(offset, "name"), None, None),
    )


@router.get("/hosts/{ref}")
def host_detail(
    request: Request, platform: PlatformDep, me: Me, ref: str, offset: int = Offset
) -> HTMLResponse:
    def load() -> dict[str, Any]:
        host: HostOut = hosts.get_host(ref, platform, me)
        with platform.db.begin() as s:
            on_host = overview.instances_on(s, host.id, paged(offset, "name"))
            listed = PageOut.of(on_host, InstanceOut)
        return {
            "host": host,
            "capacity": hosts.host_capacity(host.id, platform, me),
            "page": listed,
        }

    return page(request, me, "GET /hosts/{ref}", "host.html", load)


@router.get("/images")
def image_list(
    request: Request, platform: PlatformDep, me: Me, offset: int = Offset
) -> HTMLResponse:
    return _listing(
        request,
        me,
        "GET /images",
        "images.html",
        lambda: images.list_images(platform, me, paged(offset, "name"), None),
    )


@router.get("/flavors")
def flavor_list(
    request: Request, platform: PlatformDep, me: Me, offset: int = Offset
) -> HTMLResponse:
    return _listing(
        request,
        me,
        "GET /flavors",
        "flavors.html",
        lambda: flavors.list_flavors(platform, me, paged(offset, "name"), None),
    )


@router.get("/volumes")
def volume_list(
    request: Request, platform: PlatformDep, me: Me, offset: int = Offset
) -> HTMLResponse:
    return _listing(
        request,
        me,
        "GET /volumes",
        "volumes.html",
        lambda: volumes.list_volumes(platform, me, paged(offset, "name")),
    )


@router.get("/networks")
def network_list(
    request: Request, platform: PlatformDep, me: Me, offset: int = Offset
) -> HTMLResponse:
    return _listing(
        request,
        me,
        "GET /networks",
        "networks.html",
        lambda: networks.list_networks(platform, me, paged(offset, "name")),
    )


@router.get("/projects")
def project_list(
    request: Request, platform: PlatformDep, me: Me, offset: int = Offset
) -> HTMLResponse:
    return _listing(
        request,
        me,
        "GET /projects",
        "projects.html",
        lambda: users.list_projects(platform, me, paged(offset, "name")),
    )


@router.get("/users")
def user_list(
    request: Request, platform: PlatformDep, me: Me, offset: int = Offset
) -> HTMLResponse:
    return _listing(
        request,
        me,
        "GET /users",
        "users.html",
        lambda: users.list_users(platform, me, paged(offset, "username")),
    )


@router.get("/audit")
def audit_log(
    request: Request, platform: PlatformDep, me: Me, offset: int = Offset
) -> HTMLResponse:
    """The newest records first."""
    return _listing(
        request,
        me,
        "GET /audit",
        "audit.html",
        lambda: audit.search(platform, me, paged(offset, "-created_at"), audit.audit_query()),
    )
