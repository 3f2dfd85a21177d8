"""Volumes (data disks) of the caller's project, and their attachments to instances."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy.orm import Session

from nubis.api.deps import PageDep, PlatformDep, PrincipalDep
from nubis.api.schemas import PageOut, TaskAccepted
from nubis.api.storage_schemas import (
    AttachAccepted,
    AttachIn,
    AttachmentOut,
    ExtendIn,
    VolumeAccepted,
    VolumeIn,
    VolumeOut,
)
from nubis.db.models import Volume
from nubis.platform import Platform
from nubis.services.volumes import VolumeRequest

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
    with platform.db.begin() as s:
        page = platform.volumes.list(s, principal, pages.limit, pages.offset, pages.marker)
        return PageOut[VolumeOut](
            items=[volume_out(platform, s, v) for v in page.items],
            total=page.total,
            limit=page.limit,
            offset=page.offset,
        )


@router.post("/volumes", status_code=202)
def create_volume(body: VolumeIn, platform: PlatformDep, principal: PrincipalDep) -> VolumeAccepted:
    with platform.db.begin() as s:
        volume, task = platform.volumes.create(s, principal, VolumeRequest(**body.model_dump()))
        return VolumeAccepted(**volume_out(platform, s, volume).model_dump(), task_id=task.id)


@router.get("/volumes/{ref}")
def get_volume(ref: str, platform: PlatformDep, principal: PrincipalDep) -> VolumeOut:
    with platform.db.begin() as s:
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


@router.get("/instances/{ref}/volumes")
def instance_volumes(
    ref: str, platform: PlatformDep, principal: PrincipalDep
) -> list[AttachmentOut]:
    with platform.db.begin() as s:
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
