"""Cinder v3 volume types and snapshots. A volume type is a disk offering (its tags
pick the pool, e.g. ``ceph``), plus Cinder's ``__DEFAULT__`` (no offering: the pool
with the most room); a snapshot is a volume snapshot (``openstack volume snapshot
create``), and ``openstack volume create --snapshot`` clones one."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from nubis.api.deps import PlatformDep
from nubis.api.openstack import links
from nubis.api.openstack.caller import As, check_project
from nubis.api.openstack.volumes import DEFAULT_TYPE, find_volume
from nubis.db.models import DiskOffering, Volume, VolumeSnapshot
from nubis.services.core.errors import BadRequest, NotFoundError
from nubis.services.core.lookup import paginate
from nubis.services.core.principal import Principal

router = APIRouter(prefix="/volume/v3/{project_id}", tags=["openstack block storage"])

DEFAULT_TYPE_ID = "00000000-0000-4000-8000-00000000d5fa"  # Cinder's __DEFAULT__, fixed
# a task in flight that Cinder shows as the status
SNAPSHOT_TASKS = {"deleting": "deleting", "reverting": "restoring", "cloning": "available"}


def type_view(offering: DiskOffering | None) -> dict[str, Any]:
    if offering is None:
        return {
            "id": DEFAULT_TYPE_ID,
            "name": DEFAULT_TYPE,
            "description": "Nubis's default: the storage pool with the most room",
            "is_public": True,
            "extra_specs": {},
            "os-volume-type-access:is_public": True,
        }
    return {
        "id": offering.id,
        "name": offering.name,
        "description": f"disk offering {offering.name} (pools tagged {', '.join(offering.tags)})"
        if offering.tags
        else f"disk offering {offering.name}",
        "is_public": True,
        "extra_specs": {
            "nubis:format": offering.format,
            "nubis:provisioning": offering.provisioning,
        },
        "os-volume-type-access:is_public": True,
    }


TypeReader = Annotated[Principal, As("GET /disk-offerings")]


@router.get("/types")
def list_types(project_id: str, platform: PlatformDep, principal: TypeReader) -> dict[str, Any]:
    check_project(principal, project_id)
    with platform.db.read() as s:
        offerings = s.scalars(select(DiskOffering).order_by(DiskOffering.name)).all()
        return {"volume_types": [type_view(None), *(type_view(o) for o in offerings)]}


@router.get("/types/default")
def default_type(project_id: str, platform: PlatformDep, principal: TypeReader) -> dict[str, Any]:
    check_project(principal, project_id)
    return {"volume_type": type_view(None)}


@router.get("/types/{type_id}")
def show_type(
    project_id: str, type_id: str, platform: PlatformDep, principal: TypeReader
) -> dict[str, Any]:
    check_project(principal, project_id)
    if type_id in (DEFAULT_TYPE_ID, DEFAULT_TYPE):
        return {"volume_type": type_view(None)}
    with platform.db.read() as s:
        offering = s.scalar(
            select(DiskOffering).where(
                (DiskOffering.id == type_id) | (DiskOffering.name == type_id)
            )
        )
        if offering is None:
            raise NotFoundError(f"Volume type {type_id} could not be found.")
        return {"volume_type": type_view(offering)}


# -- snapshots ---------------------------------------------------------------------------
def snapshot_view(snapshot: VolumeSnapshot, detail: bool = True) -> dict[str, Any]:
    view: dict[str, Any] = {"id": snapshot.id, "name": snapshot.name}
    if not detail:
        return view
    return view | {
        "volume_id": snapshot.volume_id,
        "size": snapshot.size_gib,
        "status": SNAPSHOT_TASKS.get(snapshot.task_state or "", snapshot.status),
        "description": None,
        "metadata": {},
        "created_at": links.timestamp(snapshot.created_at),
        "updated_at": None,
        "os-extended-snapshot-attributes:project_id": snapshot.project_id,
        "os-extended-snapshot-attributes:progress": "100%"
        if snapshot.status == "available"
        else "0%",
    }


def _find_snapshot(session: Session, principal: Principal, snapshot_id: str) -> VolumeSnapshot:
    snapshot = session.scalar(select(VolumeSnapshot).filter_by(id=snapshot_id, **principal.scope()))
    if snapshot is None:
        raise NotFoundError(f"Snapshot {snapshot_id} could not be found.")
    return snapshot


SnapshotReader = Annotated[Principal, As("GET /volumes/{ref}/snapshots")]


def _list(
    request: Request,
    platform: PlatformDep,
    principal: Principal,
    project_id: str,
    detail: bool,
    paging: links.Paging,
    name: str | None,
) -> dict[str, Any]:
    check_project(principal, project_id)
    query = select(VolumeSnapshot).where(VolumeSnapshot.project_id == project_id)
    if name:
        query = query.where(VolumeSnapshot.name == name)
    with platform.db.read() as s:
        page = paginate(s, query, VolumeSnapshot, paging.page())
        views = [snapshot_view(x, detail) for x in page.items]
    return {"snapshots": views, **links.page_links(request, "snapshots", page.items, paging)}


@router.get("/snapshots")
def list_snapshots(
    project_id: str,
    request: Request,
    platform: PlatformDep,
    principal: SnapshotReader,
    paging: links.PagingDep,
    name: str | None = None,
) -> dict[str, Any]:
    return _list(request, platform, principal, project_id, False, paging, name)


@router.get("/snapshots/detail")
def list_snapshots_detail(
    project_id: str,
    request: Request,
    platform: PlatformDep,
    principal: SnapshotReader,
    paging: links.PagingDep,
    name: str | None = None,
) -> dict[str, Any]:
    return _list(request, platform, principal, project_id, True, paging, name)


@router.get("/snapshots/{snapshot_id}")
def show_snapshot(
    project_id: str, snapshot_id: str, platform: PlatformDep, principal: SnapshotReader
) -> dict[str, Any]:
    check_project(principal, project_id)
    with platform.db.read() as s:
        return {"snapshot": snapshot_view(_find_snapshot(s, principal, snapshot_id))}


class SnapshotBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    volume_id: str
    name: str | None = None
    description: str | None = Field(default=None, max_length=255)
    force: bool | str = False  # Cinder's "snapshot an in-use volume": Nubis always may


class SnapshotIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    snapshot: SnapshotBody


@router.post("/snapshots", status_code=202)
def create_snapshot(
    project_id: str,
    body: SnapshotIn,
    platform: PlatformDep,
    principal: Annotated[Principal, As("POST /volumes/{ref}/snapshots")],
) -> dict[str, Any]:
    """A running instance using the volume goes on running (its disk is frozen for the
    copy), so Cinder's ``force`` is not needed."""
    check_project(principal, project_id)
    if not body.snapshot.name:
        raise BadRequest("Nubis volume snapshots need a name")
    with platform.db.begin() as s:
        volume: Volume = find_volume(s, principal, body.snapshot.volume_id)
        snapshot, _task = platform.volume_snapshots.create(
            s, principal, volume.id, body.snapshot.name
        )
        return {"snapshot": snapshot_view(snapshot)}


@router.delete("/snapshots/{snapshot_id}", status_code=202)
def delete_snapshot(
    project_id: str,
    snapshot_id: str,
    platform: PlatformDep,
    principal: Annotated[Principal, As("DELETE /volumes/{ref}/snapshots/{snap}")],
) -> Response:
    check_project(principal, project_id)
    with platform.db.begin() as s:
        snapshot = _find_snapshot(s, principal, snapshot_id)
        platform.volume_snapshots.delete(s, principal, snapshot.volume_id, snapshot.id)
    return Response(status_code=202)
