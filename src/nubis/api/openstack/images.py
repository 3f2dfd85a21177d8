"""Glance v2: version discovery and images, mapped onto the image service."""

from __future__ import annotations

from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nubis.api.deps import PlatformDep
from nubis.api.openstack import links
from nubis.api.openstack.caller import As
from nubis.api.openstack.errors import NotSupported
from nubis.db.models import Image
from nubis.services.core.errors import BadRequest, Conflict, Forbidden, NotFoundError
from nubis.services.core.lookup import paginate
from nubis.services.core.principal import Principal
from nubis.services.identity import policy, quotas
from nubis.services.storage import images

router = APIRouter(prefix="/image", tags=["openstack image"])

# Nubis image status -> Glance status
STATUS = {
    "queued": "queued",
    "saving": "saving",
    "creating": "saving",  # a template being made from a server or volume
    "active": "active",
    "error": "killed",
    "deleting": "pending_delete",
}


def _version(request: Request) -> dict[str, Any]:
    href = links.service_url(request, "image") + "/v2/"
    return {"id": "v2.9", "status": "CURRENT", "links": [{"rel": "self", "href": href}]}


@router.get("")
@router.get("/")
@router.get("/versions")
def versions(request: Request) -> dict[str, Any]:
    return {"versions": [_version(request)]}


def image_view(image: Image) -> dict[str, Any]:
    disk_format = image.disk_format
    return {
        "id": image.id,
        "name": image.name,
        "status": STATUS.get(image.status, image.status),
        "visibility": "public" if image.project_id is None else "private",
        "owner": image.project_id,
        "protected": False,
        "os_hidden": False,
        "disk_format": disk_format,
        "container_format": "bare" if disk_format else None,
        "size": image.size,
        "virtual_size": image.virtual_size,
        "checksum": None,
        "os_hash_algo": "sha256" if image.sha256 else None,
        "os_hash_value": image.sha256,
        "min_disk": 0,
        "min_ram": 0,
        "tags": [],
        "created_at": links.timestamp(image.created_at),
        "updated_at": links.timestamp(image.created_at),
        "self": f"/v2/images/{image.id}",
        "file": f"/v2/images/{image.id}/file",
        "schema": "/v2/schemas/image",
    }


@router.get("/v2/images")
def list_images(
    request: Request,
    platform: PlatformDep,
    principal: Annotated[Principal, As("GET /images")],
    paging: links.PagingDep,
    name: str | None = None,
    status: str | None = None,
    visibility: str | None = None,
) -> dict[str, Any]:
    query = select(Image).where(images.visible(principal))
    if name:
        query = query.where(Image.name == name)
    if status:
        wanted = [k for k, v in STATUS.items() if v == status]
        query = query.where(Image.status.in_(wanted))
    if visibility == "public":
        query = query.where(Image.project_id.is_(None))
    elif visibility in ("private", "shared", "community"):
        query = query.where(Image.project_id.is_not(None))
    with platform.db.read() as s:
        page = paginate(s, query, Image, paging.page())
        out: dict[str, Any] = {
            "images": [image_view(i) for i in page.items],
            "first": "/v2/images",
            "schema": "/v2/schemas/images",
        }
    if paging.limit and len(page.items) == paging.limit:  # Glance: a path, not a URL
        out["next"] = f"/v2/images?limit={paging.limit}&marker={page.items[-1].id}"
    return out


def find_image(session: Session, principal: Principal, image_id: str) -> Image:
    image = session.scalar(select(Image).where(Image.id == image_id, images.visible(principal)))
    if image is None:
        raise NotFoundError(f"No image found with ID {image_id}")
    return image


@router.get("/v2/images/{image_id}")
def show_image(
    image_id: str,
    platform: PlatformDep,
    principal: Annotated[Principal, As("GET /images/{ref}")],
) -> dict[str, Any]:
    with platform.db.read() as s:
        return image_view(find_image(s, principal, image_id))


class ImageIn(BaseModel):
    """Other properties (Glance keeps any) are accepted and not kept."""

    model_config = ConfigDict(extra="allow")
    name: str
    visibility: str = "private"
    disk_format: str | None = None
    container_format: str | None = None
    id: str | None = None
    protected: bool = False
    tags: list[str] = Field(default_factory=list)


DISK_FORMATS = ("qcow2", "raw", "iso")


@router.post("/v2/images", status_code=201)
def create_image(
    body: ImageIn,
    platform: PlatformDep,
    principal: Annotated[Principal, As("POST /images")],
) -> dict[str, Any]:
    """An image without data (``queued``); ``PUT .../file`` uploads it. The disk format
    is read from the data (a declared one is not trusted)."""
    if body.id is not None:
        raise NotSupported("Nubis chooses image ids: leave id out")
    if body.protected:
        raise NotSupported("protected images are not supported")
    if body.disk_format not in (None, *DISK_FORMATS):
        raise BadRequest(f"disk_format must be one of {', '.join(DISK_FORMATS)}")
    if body.container_format not in (None, "bare"):
        raise BadRequest("container_format must be bare")
    if body.visibility not in ("private", "public"):
        raise NotSupported("images are private (the project's) or public")
    public = body.visibility == "public"
    if public and policy.SYSTEM_ADMIN not in principal.roles:
        raise Forbidden("only the system administrator makes public images")
    with platform.db.begin() as s:
        image = platform.images.reserve(s, body.name, None if public else principal.project_id)
        return image_view(image)


def _start_upload(
    platform: PlatformDep, principal: Principal, image_id: str, length: int | None
) -> None:
    with platform.db.read() as s:
        image = find_image(s, principal, image_id)
        if image.project_id is None and not principal.all_projects:
            raise Forbidden("only the system administrator uploads a public image")
        image_id = image.id
    platform.images.start_fill(platform.db, image_id, length)


@router.put("/v2/images/{image_id}/file", status_code=204)
async def upload_image(
    image_id: str,
    request: Request,
    platform: PlatformDep,
    principal: Annotated[Principal, As("POST /images")],
) -> Response:
    """The data of a queued image, streamed to the image store and inspected; refused
    data leaves the image queued."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip()
    if content_type != "application/octet-stream":
        raise BadRequest("send the image data as application/octet-stream")
    length = request.headers.get("content-length")
    announced = int(length) if length and length.isdigit() else None
    await anyio.to_thread.run_sync(_start_upload, platform, principal, image_id, announced)
    try:
        staged = await platform.images.stage_stream(request.stream(), image_id)
    except BaseException:
        await anyio.to_thread.run_sync(platform.images.abandon_fill, platform.db, image_id)
        raise
    await anyio.to_thread.run_sync(platform.images.fill, platform.db, image_id, staged)
    return Response(status_code=204)


@router.get(
    "/v2/images/{image_id}/file",
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def download_image(
    image_id: str,
    platform: PlatformDep,
    principal: Annotated[Principal, As("GET /images/{ref}/file")],
) -> Response:
    with platform.db.read() as s:
        image = find_image(s, principal, image_id)
        if image.status != "active":
            if image.status == "queued":
                return Response(status_code=204)  # Glance: no data yet
            raise Conflict(f"image {image.name!r} is {image.status}, not active")
        path = platform.images.path(image)
    return FileResponse(path, media_type="application/octet-stream")


@router.delete("/v2/images/{image_id}", status_code=204)
def delete_image(
    image_id: str,
    platform: PlatformDep,
    principal: Annotated[Principal, As("DELETE /images/{ref}")],
) -> Response:
    with platform.db.begin() as s:
        find_image(s, principal, image_id)
    platform.images.delete(platform.db, principal, image_id)
    return Response(status_code=204)


@router.get("/v2/info/usage")
def image_usage(
    platform: PlatformDep, principal: Annotated[Principal, As("GET /quotas")]
) -> dict[str, Any]:
    """The project's image quotas as Glance's unified-limits usage shows them (sizes
    in MiB; -1: no limit)."""
    with platform.db.read() as s:
        report = quotas.report(s, principal.project_id)
        uploading = s.scalar(
            select(func.count())
            .select_from(Image)
            .where(Image.project_id == principal.project_id, Image.status == "saving")
        )
    count, gib = report["images"], report["image_gib"]

    def mib(value: int) -> int:
        return value if value == quotas.UNLIMITED else value * 1024

    return {
        "usage": {
            "image_count_total": {"limit": count["limit"], "usage": count["in_use"]},
            "image_size_total": {"limit": mib(gib["limit"]), "usage": mib(gib["in_use"])},
            "image_stage_total": {"limit": -1, "usage": 0},
            "image_count_uploading": {"limit": -1, "usage": uploading or 0},
        }
    }
