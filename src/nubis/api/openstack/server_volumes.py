"""Nova volume attachments: a server's volumes, attach and detach, mapped onto the
volume service."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict
from sqlalchemy import select

from nubis.api.deps import PlatformDep
from nubis.api.openstack.caller import As
from nubis.api.openstack.servers import find_server
from nubis.api.openstack.volumes import find_volume
from nubis.db.models import VolumeAttachment
from nubis.services.core.errors import NotFoundError
from nubis.services.core.principal import Principal

router = APIRouter(
    prefix="/compute/v2.1/servers/{server_id}/os-volume_attachments",
    tags=["openstack compute"],
)


def attachment_view(a: VolumeAttachment) -> dict[str, Any]:
    return {
        "id": a.volume_id,
        "serverId": a.instance_id,
        "volumeId": a.volume_id,
        "device": f"/dev/{a.target}",
    }


@router.get("")
def list_attachments(
    server_id: str,
    platform: PlatformDep,
    principal: Annotated[Principal, As("GET /instances/{ref}/volumes")],
) -> dict[str, Any]:
    instance = find_server(platform, principal, server_id)
    with platform.db.read() as s:
        rows = platform.volumes.instance_attachments(s, instance.id)
        return {"volumeAttachments": [attachment_view(a) for a in rows]}


def _attachment(session: Any, server_id: str, volume_id: str) -> VolumeAttachment:
    row = session.scalar(
        select(VolumeAttachment).where(
            VolumeAttachment.instance_id == server_id, VolumeAttachment.volume_id == volume_id
        )
    )
    if row is None:
        raise NotFoundError(f"volume {volume_id} is not attached to server {server_id}")
    return row


@router.get("/{volume_id}")
def show_attachment(
    server_id: str,
    volume_id: str,
    platform: PlatformDep,
    principal: Annotated[Principal, As("GET /instances/{ref}/volumes")],
) -> dict[str, Any]:
    instance = find_server(platform, principal, server_id)
    with platform.db.read() as s:
        return {"volumeAttachment": attachment_view(_attachment(s, instance.id, volume_id))}


class AttachBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    volumeId: str  # noqa: N815 - Nova's field name
    device: str | None = None


class AttachIn(BaseModel):
    volumeAttachment: AttachBody  # noqa: N815


@router.post("")
def attach_volume(
    server_id: str,
    body: AttachIn,
    platform: PlatformDep,
    principal: Annotated[Principal, As("POST /instances/{ref}/volumes")],
) -> dict[str, Any]:
    """The device is chosen by Nubis (the next free one); a requested one is ignored,
    as Nova's libvirt driver does."""
    instance = find_server(platform, principal, server_id)
    with platform.db.begin() as s:
        volume = find_volume(s, principal, body.volumeAttachment.volumeId)
        attachment, _task = platform.volumes.attach(s, principal, instance.id, volume.id)
        return {"volumeAttachment": attachment_view(attachment)}


@router.delete("/{volume_id}", status_code=202)
def detach_volume(
    server_id: str,
    volume_id: str,
    platform: PlatformDep,
    principal: Annotated[Principal, As("DELETE /instances/{ref}/volumes/{volume}")],
) -> Response:
    instance = find_server(platform, principal, server_id)
    with platform.db.begin() as s:
        _attachment(s, instance.id, volume_id)
        platform.volumes.detach(s, principal, instance.id, volume_id)
    return Response(status_code=202)
