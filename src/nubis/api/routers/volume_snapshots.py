"""Volume snapshots: point-in-time copies of one volume, reverted to or cloned."""

from __future__ import annotations

from fastapi import APIRouter

from nubis.api.deps import PlatformDep, PrincipalDep
from nubis.api.schemas import TaskAccepted
from nubis.api.storage_schemas import SnapshotIn, VolumeSnapshotAccepted, VolumeSnapshotOut

router = APIRouter(prefix="/volumes/{ref}/snapshots", tags=["volume snapshots"])


@router.get("")
def list_volume_snapshots(
    ref: str, platform: PlatformDep, principal: PrincipalDep
) -> list[VolumeSnapshotOut]:
    with platform.db.read() as s:
        return [
            VolumeSnapshotOut.model_validate(x)
            for x in platform.volume_snapshots.find_all(s, principal, ref)
        ]


@router.post("", status_code=202)
def create_volume_snapshot(
    ref: str, body: SnapshotIn, platform: PlatformDep, principal: PrincipalDep
) -> VolumeSnapshotAccepted:
    """Copy the volume as it is now; a running instance using it goes on running (its
    disk is frozen for the copy and merged back)."""
    with platform.db.begin() as s:
        snapshot, task = platform.volume_snapshots.create(s, principal, ref, body.name)
        return VolumeSnapshotAccepted(
            **VolumeSnapshotOut.model_validate(snapshot).model_dump(), task_id=task.id
        )


@router.get("/{snap}")
def get_volume_snapshot(
    ref: str, snap: str, platform: PlatformDep, principal: PrincipalDep
) -> VolumeSnapshotOut:
    with platform.db.read() as s:
        _volume, snapshot = platform.volume_snapshots.find(s, principal, ref, snap)
        return VolumeSnapshotOut.model_validate(snapshot)


@router.post("/{snap}/actions/revert", status_code=202)
def revert_volume_snapshot(
    ref: str, snap: str, platform: PlatformDep, principal: PrincipalDep
) -> TaskAccepted:
    """Replace the volume's data (and size) with the snapshot's. Not while a running
    instance uses the volume."""
    with platform.db.begin() as s:
        _snapshot, task = platform.volume_snapshots.revert(s, principal, ref, snap)
        return TaskAccepted(task_id=task.id)


@router.delete("/{snap}", status_code=202)
def delete_volume_snapshot(
    ref: str, snap: str, platform: PlatformDep, principal: PrincipalDep
) -> TaskAccepted:
    with platform.db.begin() as s:
        _snapshot, task = platform.volume_snapshots.delete(s, principal, ref, snap)
        return TaskAccepted(task_id=task.id)
