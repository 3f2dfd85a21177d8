"""Cinder v3 (the part the clients need): version discovery and volumes (create, list,
show, delete, extend), mapped onto the volume service. Attaching is Nova's
``os-volume_attachments`` (``server_volumes``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from nubis.api.deps import PlatformDep
from nubis.api.openstack import links
from nubis.api.openstack.bodies import one_action
from nubis.api.openstack.caller import As, check_project
from nubis.api.openstack.errors import NotSupported
from nubis.db.models import DiskOffering, StoragePool, Volume, VolumeAttachment
from nubis.services.core.errors import BadRequest, NotFoundError
from nubis.services.core.lookup import paginate
from nubis.services.core.principal import Principal
from nubis.services.identity import policy
from nubis.services.storage.volume_moves import HOLD, request_move
from nubis.services.storage.volumes import VolumeRequest

router = APIRouter(prefix="/volume", tags=["openstack block storage"])

# a task in flight that Cinder shows as the status
TASK_STATUS = {
    "attaching": "attaching",
    "detaching": "detaching",
    "extending": "extending",
    "deleting": "deleting",
}
DEFAULT_TYPE = "__DEFAULT__"


@router.get("")
@router.get("/")
def versions(request: Request) -> dict[str, Any]:
    href = links.root(request) + "/volume/v3/"
    return {
        "versions": [
            {
                "id": "v3.0",
                "status": "CURRENT",
                "version": "3.0",
                "min_version": "3.0",
                "updated": "2016-02-08T12:20:21Z",
                "links": [{"rel": "self", "href": href}],
            }
        ]
    }


def attachment_view(a: VolumeAttachment) -> dict[str, Any]:
    return {
        "id": a.volume_id,
        "attachment_id": a.id,
        "volume_id": a.volume_id,
        "server_id": a.instance_id,
        "device": f"/dev/{a.target}",
        "host_name": None,
        "attached_at": links.timestamp(a.created_at),
    }


def pool_of_host(host: str) -> str:
    """The pool a Cinder backend host names: ``nubis@<pool>#<pool>`` as volumes show
    it (``os-vol-host-attr:host``), the part after ``#``; or the pool's name alone."""
    return host.rsplit("#", 1)[-1].rsplit("@", 1)[-1]


def volume_view(
    request: Request, session: Session, volume: Volume, detail: bool = True, admin: bool = False
) -> dict[str, Any]:
    """A volume as Cinder shows it (``admin``: with the backend host, as Cinder shows
    it to administrators only)."""
    view: dict[str, Any] = {
        "id": volume.id,
        "name": volume.name,
        "links": [
            {
                "rel": "self",
                "href": f"{links.service_url(request, 'volumev3', volume.project_id)}"
                f"/volumes/{volume.id}",
            }
        ],
    }
    if not detail:
        return view
    attachments = session.scalars(
        select(VolumeAttachment).where(VolumeAttachment.volume_id == volume.id)
    ).all()
    offering = session.get(DiskOffering, volume.offering_id) if volume.offering_id else None
    pool = session.get(StoragePool, volume.pool_id)
    return view | {
        "size": volume.size_gib,
        "status": TASK_STATUS.get(volume.task_state or "", volume.status),
        "attachments": [attachment_view(a) for a in attachments],
        "availability_zone": "nova",
        "bootable": "false",
        "encrypted": False,
        "multiattach": volume.shareable,
        "volume_type": offering.name if offering else DEFAULT_TYPE,
        "description": None,
        "metadata": {},
        "snapshot_id": None,
        "source_volid": None,
        "user_id": None,
        "os-vol-tenant-attr:tenant_id": volume.project_id,
        "os-vol-host-attr:host": f"nubis@{pool.name}#{pool.name}" if pool and admin else None,
        "migration_status": "migrating" if volume.task_state == HOLD else None,
        "created_at": links.timestamp(volume.created_at),
        "updated_at": links.timestamp(volume.updated_at),
    }


@dataclass
class VolumeFilters:
    name: str | None = None
    status: str | None = None


def _list(
    request: Request,
    platform: PlatformDep,
    principal: Principal,
    project_id: str,
    detail: bool,
    filters: VolumeFilters,
    paging: links.Paging,
) -> dict[str, Any]:
    check_project(principal, project_id)
    query = select(Volume).where(Volume.project_id == project_id)
    if filters.name:
        query = query.where(Volume.name == filters.name)
    if filters.status:
        query = query.where(Volume.status == filters.status)
    with platform.db.begin() as s:
        page = paginate(s, query, Volume, paging.page())
        views = [volume_view(request, s, v, detail, principal.all_projects) for v in page.items]
    return {"volumes": views, **links.page_links(request, "volumes", page.items, paging)}


Reader = Annotated[Principal, As("GET /volumes")]
Filters = Annotated[VolumeFilters, Depends()]


@router.get("/v3/{project_id}/volumes")
def list_volumes(
    project_id: str,
    request: Request,
    platform: PlatformDep,
    principal: Reader,
    filters: Filters,
    paging: links.PagingDep,
) -> dict[str, Any]:
    return _list(request, platform, principal, project_id, False, filters, paging)


@router.get("/v3/{project_id}/volumes/detail")
def list_volumes_detail(
    project_id: str,
    request: Request,
    platform: PlatformDep,
    principal: Reader,
    filters: Filters,
    paging: links.PagingDep,
) -> dict[str, Any]:
    return _list(request, platform, principal, project_id, True, filters, paging)


def find_volume(session: Session, principal: Principal, volume_id: str) -> Volume:
    volume = session.scalar(select(Volume).filter_by(id=volume_id, **principal.scope()))
    if volume is None:
        raise NotFoundError(f"Volume {volume_id} could not be found.")
    return volume


@router.get("/v3/{project_id}/volumes/{volume_id}")
def show_volume(
    project_id: str,
    volume_id: str,
    request: Request,
    platform: PlatformDep,
    principal: Annotated[Principal, As("GET /volumes/{ref}")],
) -> dict[str, Any]:
    check_project(principal, project_id)
    with platform.db.read() as s:
        volume = find_volume(s, principal, volume_id)
        return {"volume": volume_view(request, s, volume, admin=principal.all_projects)}


class VolumeBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    size: int | None = None
    name: str | None = None
    volume_type: str | None = None
    snapshot_id: str | None = None
    source_volid: str | None = None
    imageRef: str | None = None  # noqa: N815 - Cinder's field name
    multiattach: bool = False
    description: str | None = Field(default=None, max_length=255)


class VolumeIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    volume: VolumeBody


@router.post("/v3/{project_id}/volumes", status_code=202)
def create_volume(
    project_id: str,
    body: VolumeIn,
    request: Request,
    platform: PlatformDep,
    principal: Annotated[Principal, As("POST /volumes")],
) -> dict[str, Any]:
    if project_id != principal.project_id:
        raise BadRequest("volumes are created in the project your token is scoped to")
    v = body.volume
    if v.source_volid:
        raise NotSupported("volumes from another volume are not supported")
    if not v.name:
        raise BadRequest("Nubis volumes need a name")
    offering = None if v.volume_type in (None, DEFAULT_TYPE) else v.volume_type
    req = VolumeRequest(
        name=v.name,
        size_gib=v.size,
        offering=offering,
        shareable=v.multiattach,
        snapshot=v.snapshot_id,
        image=v.imageRef,
    )
    with platform.db.begin() as s:
        volume, _task = platform.volumes.create(s, principal, req)
        return {"volume": volume_view(request, s, volume, admin=principal.all_projects)}


@router.delete("/v3/{project_id}/volumes/{volume_id}", status_code=202)
def delete_volume(
    project_id: str,
    volume_id: str,
    platform: PlatformDep,
    principal: Annotated[Principal, As("DELETE /volumes/{ref}")],
) -> Response:
    check_project(principal, project_id)
    with platform.db.begin() as s:
        volume = find_volume(s, principal, volume_id)
        platform.volumes.delete(s, principal, volume.id)
    return Response(status_code=202)


@router.post("/v3/{project_id}/volumes/{volume_id}/action", status_code=202)
def volume_action(
    project_id: str,
    volume_id: str,
    body: dict[str, Any],
    platform: PlatformDep,
    principal: Annotated[Principal, As("POST /volumes/{ref}/actions/extend")],
) -> Response:
    """``os-extend`` grows the volume; ``os-migrate_volume`` (system administrators)
    moves it to the pool its ``host`` names (``<host>@<backend>#<pool>``, or a pool's
    name); attaching goes through Nova."""
    check_project(principal, project_id)
    name, args = one_action(body)
    if name not in ("os-extend", "os-migrate_volume"):
        raise NotSupported(f"the volume action {name!r} is not supported by Nubis")
    if name == "os-migrate_volume":
        policy.authorize(principal.roles, "POST /volumes/{ref}/actions/migrate")
        if not isinstance(args, dict) or not isinstance(args.get("host"), str):
            raise BadRequest("os-migrate_volume needs host")
        with platform.db.begin() as s:
            volume = find_volume(s, principal, volume_id)
            request_move(platform.volumes, s, principal, volume.id, pool_of_host(args["host"]))
        return Response(status_code=202)
    if not isinstance(args, dict) or "new_size" not in args:
        raise BadRequest("os-extend needs new_size")
    with platform.db.begin() as s:
        volume = find_volume(s, principal, volume_id)
        platform.volumes.extend(s, principal, volume.id, args["new_size"])
    return Response(status_code=202)
