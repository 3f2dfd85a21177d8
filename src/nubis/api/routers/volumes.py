"""Volumes (data disks) of the caller's project, and their attachments to instances."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session
from starlette.requests import ClientDisconnect

from nubis.api.deps import PageDep, PlatformDep, PrincipalDep
from nubis.api.schemas import PageOut, TaskAccepted, TemplateIn
from nubis.api.storage_schemas import (
    AttachAccepted,
    AttachIn,
    AttachmentOut,
    ExtendIn,
    MoveIn,
    VolumeAccepted,
    VolumeIn,
    VolumeOut,
)
from nubis.db.models import Volume
from nubis.images.header import HEAD_BYTES
from nubis.platform import Platform
from nubis.services.compute import templates
from nubis.services.core.errors import BadRequest, ServiceError
from nubis.services.storage.volume_moves import request_move
from nubis.services.storage.volume_transfers import UploadRequest
from nubis.services.storage.volumes import VolumeRequest

UPLOAD_CHUNK = 1024 * 1024  # bytes handed to libvirt at a time

router = APIRouter(tags=["volumes"])


def volume_out(platform: Platform, s: Session, volume: Volume) -> VolumeOut:
    out = VolumeOut.model_validate(volume)
    out.attachments = [
        AttachmentOut.model_validate(a) for a in platform.volumes.attachments(s, volume.id)
    ]
    return out


@router.get("/volumes")
def list_volumes(
    platform: PlatformDep, principal: PrincipalDep, pages: PageDep
) -> PageOut[VolumeOut]:
    with platform.db.read() as s:
        page = platform.volumes.find_all(s, principal, pages)
        return PageOut.with_items(page, [volume_out(platform, s, v) for v in page.items])


@router.post("/volumes", status_code=202)
def create_volume(body: VolumeIn, platform: PlatformDep, principal: PrincipalDep) -> VolumeAccepted:
    with platform.db.begin() as s:
        volume, task = platform.volumes.create(s, principal, VolumeRequest(**body.model_dump()))
        return VolumeAccepted(**volume_out(platform, s, volume).model_dump(), task_id=task.id)


UPLOAD_DOC = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    },
}


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ServiceError):
        return exc.message
    if isinstance(exc, ClientDisconnect):
        return "the client went away before the upload ended"
    return str(exc) or exc.__class__.__name__


@router.post("/volumes/upload", status_code=201, openapi_extra=UPLOAD_DOC)
async def upload_volume(
    request: Request,
    platform: PlatformDep,
    principal: PrincipalDep,
    name: str,
    pool: str | None = None,
    offering: str | None = None,
    secure_delete: bool | None = None,
    shareable: bool = False,
) -> VolumeOut:
    """Upload a disk image (qcow2 or raw, ``application/octet-stream`` with a
    Content-Length) as a new volume: streamed to a host of the pool through libvirt,
    never held whole in memory. Progress: the ``volume.upload`` task of the volume."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/octet-stream":
        raise BadRequest("send the disk image as application/octet-stream")
    try:
        length = int(request.headers["content-length"])
    except (KeyError, ValueError):
        raise BadRequest("a Content-Length is required: the upload is streamed") from None
    chunks = request.stream()
    buffer = bytearray()
    async for chunk in chunks:
        buffer += chunk
        if len(buffer) >= HEAD_BYTES:
            break
    req = UploadRequest(name, length, pool, offering, secure_delete, shareable)
    upload = await anyio.to_thread.run_sync(
        platform.volume_transfers.start_upload, principal, req, bytes(buffer[:HEAD_BYTES])
    )
    try:
        async for chunk in chunks:
            buffer += chunk
            if len(buffer) >= UPLOAD_CHUNK:
                await anyio.to_thread.run_sync(upload.write, bytes(buffer))
                buffer.clear()
        if buffer:
            await anyio.to_thread.run_sync(upload.write, bytes(buffer))
        volume = await anyio.to_thread.run_sync(upload.finish)
    except BaseException as exc:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(upload.abort, _describe(exc))
        raise
    return VolumeOut.model_validate(volume)


@router.get(
    "/volumes/{ref}/download",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
async def download_volume(ref: str, platform: PlatformDep, principal: PrincipalDep) -> Response:
    """The volume's file (qcow2 or raw, as stored), streamed from its host through
    libvirt. Not while a running instance uses it. Progress: its ``volume.download``
    task."""
    download = await anyio.to_thread.run_sync(
        platform.volume_transfers.start_download, principal, ref
    )

    async def body() -> AsyncIterator[bytes]:
        complete = False
        try:
            while data := await anyio.to_thread.run_sync(download.read):
                yield data
            complete = True
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(download.close, complete)

    return StreamingResponse(
        body(),
        media_type="application/octet-stream",
        headers={
            "Content-Length": str(download.length),
            "Content-Disposition": f'attachment; filename="{download.filename}"',
        },
    )


@router.get("/volumes/{ref}")
def get_volume(ref: str, platform: PlatformDep, principal: PrincipalDep) -> VolumeOut:
    with platform.db.read() as s:
        return volume_out(platform, s, platform.volumes.get(s, principal, ref))


@router.delete("/volumes/{ref}", status_code=202)
def delete_volume(ref: str, platform: PlatformDep, principal: PrincipalDep) -> TaskAccepted:
    """Remove the volume (its data overwritten first when it is secure-delete)."""
    with platform.db.begin() as s:
        _volume, task = platform.volumes.delete(s, principal, ref)
        return TaskAccepted(task_id=task.id)


@router.post("/volumes/{ref}/actions/extend", status_code=202)
def extend_volume(
    ref: str, body: ExtendIn, platform: PlatformDep, principal: PrincipalDep
) -> TaskAccepted:
    """Grow the volume; attached to a running instance, the guest sees the new size."""
    with platform.db.begin() as s:
        _volume, task = platform.volumes.extend(s, principal, ref, body.size_gib)
        return TaskAccepted(task_id=task.id)


@router.post("/volumes/{ref}/actions/migrate", status_code=202)
def migrate_volume(
    ref: str, body: MoveIn, platform: PlatformDep, principal: PrincipalDep
) -> TaskAccepted:
    """Move the volume to another storage pool (system administrators). Attached to a
    running instance, the disk is copied live and the guest goes on running; the
    task's progress is the share copied."""
    with platform.db.begin() as s:
        task = request_move(
            platform.volumes, s, principal, ref, body.pool, body.max_bandwidth_mib_s
        )
        return TaskAccepted(task_id=task.id)


@router.post("/volumes/{ref}/actions/create-template", status_code=202)
def create_volume_template(
    ref: str, body: TemplateIn, platform: PlatformDep, principal: PrincipalDep
) -> TaskAccepted:
    """Make an image of the volume (flattened qcow2): new instances can boot from it.
    Not while a running instance uses the volume."""
    with platform.db.begin() as s:
        task = templates.request_volume_template(
            platform.volumes, platform.images, s, principal, ref, body.name
        )
        return TaskAccepted(task_id=task.id)


@router.get("/instances/{ref}/volumes")
def instance_volumes(
    ref: str, platform: PlatformDep, principal: PrincipalDep
) -> list[AttachmentOut]:
    with platform.db.read() as s:
        instance = platform.instances.get(s, principal, ref)
        return [
            AttachmentOut.model_validate(a)
            for a in platform.volumes.instance_attachments(s, instance.id)
        ]


@router.post("/instances/{ref}/volumes", status_code=202)
def attach_volume(
    ref: str, body: AttachIn, platform: PlatformDep, principal: PrincipalDep
) -> AttachAccepted:
    """Attach (hot-plug when running) a volume; the guest sees it with the volume's
    serial in /sys/block/<target>/serial."""
    with platform.db.begin() as s:
        attachment, task = platform.volumes.attach(s, principal, ref, body.volume, body.mode)
        return AttachAccepted(
            **AttachmentOut.model_validate(attachment).model_dump(), task_id=task.id
        )


@router.delete("/instances/{ref}/volumes/{volume}", status_code=202)
def detach_volume(
    ref: str, volume: str, platform: PlatformDep, principal: PrincipalDep
) -> TaskAccepted:
    with platform.db.begin() as s:
        return TaskAccepted(task_id=platform.volumes.detach(s, principal, ref, volume).id)
