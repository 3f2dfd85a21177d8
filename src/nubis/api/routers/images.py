"""Images: streamed upload, import from a server path, list, show, delete."""

from __future__ import annotations

import json

import anyio
from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse
from pydantic import ValidationError
from sqlalchemy import select

from nubis.api.deps import PageDep, PlatformDep, PrincipalDep
from nubis.api.schemas import ImageImportIn, ImageOut, PageOut
from nubis.db.models import Image
from nubis.services.core.errors import BadRequest, Conflict, Forbidden
from nubis.services.core.lookup import paginate
from nubis.services.core.principal import Principal
from nubis.services.identity import policy
from nubis.services.storage import images
from nubis.services.storage.images import Staged

router = APIRouter(prefix="/images", tags=["images"])

UPLOAD_DOC = {
    "parameters": [
        {
            "name": "name",
            "in": "query",
            "required": False,
            "schema": {"type": "string"},
            "description": "name of the uploaded image (with an application/octet-stream body)",
        }
    ],
    "requestBody": {
        "required": True,
        "content": {
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "application/json": {"schema": ImageImportIn.model_json_schema()},
        },
    },
}


@router.get("")
def list_images(
    platform: PlatformDep,
    principal: PrincipalDep,
    pages: PageDep,
    name: str | None = None,
) -> PageOut[ImageOut]:
    query = select(Image).where(images.visible(principal))
    if name:
        query = query.where(Image.name == name)
    with platform.db.read() as s:
        page = paginate(s, query, Image, pages)
        return PageOut.of(page, ImageOut)


def _owner(principal: Principal, public: bool) -> str | None:
    """A public image (every project sees it) is the system administrator's to make."""
    if public and policy.SYSTEM_ADMIN not in principal.roles:
        raise Forbidden("only the system administrator makes public images")
    return None if public else principal.project_id


def _import(
    platform: PlatformDep, principal: Principal, body: ImageImportIn, owner: str | None
) -> ImageOut:
    if policy.SYSTEM_ADMIN not in principal.roles:
        raise Forbidden("importing from a server path needs the system administrator role")
    fd = platform.images.open_import(body.path)
    image = platform.images.import_file(platform.db, body.name, fd, owner)
    return ImageOut.model_validate(image)


def _check_name(platform: PlatformDep, name: str, owner: str | None) -> None:
    with platform.db.read() as s:
        platform.images.check_name(s, name, owner)


def _register(platform: PlatformDep, name: str, staged: Staged, owner: str | None) -> ImageOut:
    facts = platform.images.inspect(staged)
    with platform.db.begin() as s:
        image = platform.images.register(s, name, staged, facts, owner)
        return ImageOut.model_validate(image)


@router.post("", status_code=201, openapi_extra=UPLOAD_DOC)
async def create_image(
    request: Request,
    platform: PlatformDep,
    principal: PrincipalDep,
    name: str | None = None,
    public: bool = False,
) -> ImageOut:
    """Upload an image (``application/octet-stream`` body, ``?name=``), streamed to disk,
    or import a file on the server (JSON ``{"name", "path"}``, system administrator only).
    The image belongs to the caller's project; ``?public=true`` (system administrator
    only) makes it visible to every project."""
    owner = _owner(principal, public)  # refused before a byte is uploaded
    content_type = request.headers.get("content-type", "").split(";")[0].strip()
    if content_type == "application/json":
        try:
            body = ImageImportIn.model_validate(json.loads(await request.body()))
        except (ValueError, ValidationError) as exc:
            raise BadRequest(f"invalid JSON body: {exc}") from exc
        return await anyio.to_thread.run_sync(_import, platform, principal, body, owner)
    if content_type != "application/octet-stream":
        raise BadRequest("send the image as application/octet-stream (or JSON to import)")
    if not name:
        raise BadRequest("the query parameter 'name' is required for an upload")
    length = request.headers.get("content-length")
    platform.images.check_upload_size(int(length) if length and length.isdigit() else None)
    await anyio.to_thread.run_sync(_check_name, platform, name, owner)
    staged = await platform.images.stage_stream(request.stream())
    return await anyio.to_thread.run_sync(_register, platform, name, staged, owner)


@router.get("/{ref}")
def get_image(ref: str, platform: PlatformDep, principal: PrincipalDep) -> ImageOut:
    with platform.db.read() as s:
        return ImageOut.model_validate(images.get_visible(s, principal, ref))


@router.get(
    "/{ref}/file",
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def download_image(ref: str, platform: PlatformDep, principal: PrincipalDep) -> FileResponse:
    """The image's file from the image store, streamed."""
    with platform.db.read() as s:
        image = images.get_visible(s, principal, ref)
        if image.status != "active":
            raise Conflict(f"image {image.name!r} is {image.status}, not active")
        path = platform.images.path(image)
        filename = f"{image.name}.{image.disk_format or 'img'}"
    return FileResponse(path, media_type="application/octet-stream", filename=filename)


@router.delete("/{ref}", status_code=204)
def delete_image(ref: str, platform: PlatformDep, principal: PrincipalDep) -> Response:
    """Delete an image of your project (a public one: the system administrator)."""
    platform.images.delete(platform.db, principal, ref)
    return Response(status_code=204)
