"""The dashboard and the pages of hosts, images, flavors, volumes, networks, routers,
floating IPs, projects and users."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from nubis.api.deps import PlatformDep
from nubis.api.routers import audit, flavors, hosts, images, networks, routing, users, volumes
from nubis.api.schemas import HostOut, InstanceOut, PageOut, TaskOut
from nubis.api.web.render import Me, can, page
from nubis.db.models import Host, Instance
from nubis.platform import Platform
from nubis.services.core import events
from nubis.services.core.lookup import PageRequest
from nubis.services.core.principal import Principal
from nubis.services.monitoring import overview

router = APIRouter(include_in_schema=False)
PAGE_SIZE = 25
RECENT = PageRequest(limit=8, sort="-created_at")
Offset = Query(default=0, ge=0)


def paged(offset: int, sort: str | None = None) -> PageRequest:
    return PageRequest(limit=PAGE_SIZE, offset=offset, sort=sort)


@router.get("/dashboard")
def dashboard(request: Request, platform: PlatformDep, me: Me) -> HTMLResponse:
    def load() -> dict[str, Any]:
        with platform.db.read() as s:
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


@router.get("/hosts/{ref}")
def host_detail(
    request: Request, platform: PlatformDep, me: Me, ref: str, offset: int = Offset
) -> HTMLResponse:
    def load() -> dict[str, Any]:
        host: HostOut = hosts.get_host(ref, platform, me)
        with platform.db.read() as s:
            on_host = overview.instances_on(s, host.id, paged(offset, "name"))
            listed = PageOut.of(on_host, InstanceOut)
        return {
            "host": host,
            "capacity": hosts.host_capacity(host.id, platform, me),
            "page": listed,
        }

    return page(request, me, "GET /hosts/{ref}", "host.html", load)


Fetch = Callable[[Platform, Principal, PageRequest], PageOut]
# the plain list pages: (page, the API route mirrored, its rows, their order); the
# template is named after the page
LISTINGS: tuple[tuple[str, str, Fetch, str], ...] = (
    ("/hosts", "GET /hosts", lambda p, me, pr: hosts.list_hosts(p, me, pr, None, None), "name"),
    ("/images", "GET /images", lambda p, me, pr: images.list_images(p, me, pr, None), "name"),
    ("/flavors", "GET /flavors", lambda p, me, pr: flavors.list_flavors(p, me, pr, None), "name"),
    ("/volumes", "GET /volumes", volumes.list_volumes, "name"),
    ("/networks", "GET /networks", networks.list_networks, "name"),
    ("/routers", "GET /routers", routing.list_routers, "name"),
    ("/floating-ips", "GET /floating-ips", routing.list_floating_ips, "created_at"),
    ("/projects", "GET /projects", users.list_projects, "name"),
    ("/users", "GET /users", users.list_users, "username"),
    (
        "/audit",  # the newest records first
        "GET /audit",
        lambda p, me, pr: audit.search(p, me, pr, audit.audit_query()),
        "-created_at",
    ),
)


def _add_listing(path: str, action: str, fetch: Fetch, sort: str) -> None:
    template = f"{path.strip('/')}.html"

    def listing(
        request: Request, platform: PlatformDep, me: Me, offset: int = Offset
    ) -> HTMLResponse:
        load = lambda: {"page": fetch(platform, me, paged(offset, sort))}  # noqa: E731
        return page(request, me, action, template, load)

    router.add_api_route(path, listing, methods=["GET"], response_class=HTMLResponse)


for _listed in LISTINGS:
    _add_listing(*_listed)
