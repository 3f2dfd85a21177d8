"""Instance pages: the list, one instance, the create wizard and the VNC console."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from nubis.api.deps import PlatformDep
from nubis.api.monitoring_schemas import EventOut
from nubis.api.routers import flavors, hosts, images, instances, keypairs, networks, tasks
from nubis.api.routers import volumes as volume_routes
from nubis.api.web.pages import PAGE_SIZE, Offset, paged
from nubis.api.web.render import Me, can, page
from nubis.services.compute.instances import ACTIONS, DELETABLE, STATUSES
from nubis.services.compute.resize import RESIZABLE
from nubis.services.core import events
from nubis.services.core.lookup import PageRequest

router = APIRouter(include_in_schema=False)
SORTS = ("name", "-name", "status", "-status", "created_at", "-created_at")
CHOICES = PageRequest(limit=1000, sort="name")  # what a wizard's lists offer
LOG_BYTES = 16 * 1024
RECENT_EVENTS = PageRequest(limit=10, sort="-created_at")


@router.get("/instances")
def instance_list(
    request: Request,
    platform: PlatformDep,
    me: Me,
    offset: int = Offset,
    q: str = Query(default="", max_length=64),
    status: str = Query(default="", max_length=16),
    sort: str = Query(default="name", max_length=16),
) -> HTMLResponse:
    def load() -> dict[str, Any]:
        order = sort if sort in SORTS else "name"
        found = instances.list_instances(
            platform, me, paged(offset, order), None, status or None, q or None
        )
        return {
            "page": found,
            "q": q,
            "status": status,
            "sort": order,
            "statuses": STATUSES,
            "page_size": PAGE_SIZE,
        }

    return page(request, me, "GET /instances", "instances.html", load)


@router.get("/instances/new")
def instance_wizard(request: Request, platform: PlatformDep, me: Me) -> HTMLResponse:
    def load() -> dict[str, Any]:
        return {
            "images": [
                i
                for i in images.list_images(platform, me, CHOICES, None).items
                if i.status == "active"
            ],
            "flavors": flavors.list_flavors(platform, me, CHOICES, None).items,
            "networks": networks.list_networks(platform, me, CHOICES).items,
            "key_pairs": keypairs.list_key_pairs(platform, me),
        }

    return page(request, me, "POST /instances", "instance_new.html", load)


@router.get("/instances/{ref}")
def instance_detail(request: Request, platform: PlatformDep, me: Me, ref: str) -> HTMLResponse:
    def load() -> dict[str, Any]:
        inst = instances.get_instance(ref, platform, me)
        flavor = flavors.get_flavor(inst.flavor_id, platform, me) if inst.flavor_id else None
        image = images.get_image(inst.image_id, platform, me) if inst.image_id else None
        host = None
        if inst.host_id and can(me, "GET /hosts/{ref}"):
            host = hosts.get_host(inst.host_id, platform, me)
        recent = tasks.list_tasks(
            platform, me, PageRequest(limit=10, sort="-created_at"), None, inst.id
        )
        busy = inst.task_state is not None
        happened = []
        if can(me, "GET /events"):
            with platform.db.read() as s:
                found = events.search(s, me, RECENT_EVENTS, resource_id=inst.id)
                happened = [EventOut.model_validate(e) for e in found.items]
        return {
            "inst": inst,
            "flavor": flavor,
            "image": image,
            "host": host,
            "ports": instances.list_instance_ports(inst.id, platform, me),
            "disks": volume_routes.instance_volumes(inst.id, platform, me),
            "tasks": recent.items,
            "events": happened,
            "log": platform.instances.console_log(me, inst.id, LOG_BYTES)
            if can(me, "GET /instances/{ref}/console-log")
            else "",
            "actions": [
                a for a, (allowed, _s, _k) in ACTIONS.items() if inst.status in allowed and not busy
            ],
            "deletable": inst.status in DELETABLE and not busy,
            "resizable": inst.status in RESIZABLE and not busy and inst.resize_from is None,
            "flavors": flavors.list_flavors(platform, me, CHOICES, None).items,
        }

    return page(request, me, "GET /instances/{ref}", "instance.html", load)


@router.get("/instances/{ref}/console")
def instance_console(request: Request, platform: PlatformDep, me: Me, ref: str) -> HTMLResponse:
    return page(
        request,
        me,
        "POST /instances/{ref}/console",
        "console.html",
        lambda: {"inst": instances.get_instance(ref, platform, me)},
    )
