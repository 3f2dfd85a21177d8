"""Instance snapshots: all disks, and the memory of a running instance."""

from __future__ import annotations

from fastapi import APIRouter

from nubis.api.deps import PlatformDep, PrincipalDep
from nubis.api.schemas import TaskAccepted
from nubis.api.storage_schemas import SnapshotAccepted, SnapshotIn, SnapshotOut

router = APIRouter(prefix="/instances/{ref}/snapshots", tags=["snapshots"])


@router.get("")
def list_snapshots(ref: str, platform: PlatformDep, principal: PrincipalDep) -> list[SnapshotOut]:
    with platform.db.read() as s:
        return [
            SnapshotOut.model_validate(x) for x in platform.snapshots.find_all(s, principal, ref)
        ]


@router.post("", status_code=202)
def create_snapshot(
    ref: str, body: SnapshotIn, platform: PlatformDep, principal: PrincipalDep
) -> SnapshotAccepted:
    """Snapshot every disk of the instance; a running one's memory is saved too."""
    with platform.db.begin() as s:
        snapshot, task = platform.snapshots.create(s, principal, ref, body.name)
        return SnapshotAccepted(
            **SnapshotOut.model_validate(snapshot).model_dump(), task_id=task.id
        )


@router.get("/{snap}")
def get_snapshot(
    ref: str, snap: str, platform: PlatformDep, principal: PrincipalDep
) -> SnapshotOut:
    with platform.db.read() as s:
        return SnapshotOut.model_validate(platform.snapshots.get(s, principal, ref, snap))


@router.post("/{snap}/actions/revert", status_code=202)
def revert_snapshot(
    ref: str, snap: str, platform: PlatformDep, principal: PrincipalDep
) -> TaskAccepted:
    """Back to the snapshot: running from that moment if its memory was saved."""
    with platform.db.begin() as s:
        _snapshot, task = platform.snapshots.revert(s, principal, ref, snap)
        return TaskAccepted(task_id=task.id)


@router.delete("/{snap}", status_code=202)
def delete_snapshot(
    ref: str, snap: str, platform: PlatformDep, principal: PrincipalDep
) -> TaskAccepted:
    with platform.db.begin() as s:
        _snapshot, task = platform.snapshots.delete(s, principal, ref, snap)
        return TaskAccepted(task_id=task.id)
