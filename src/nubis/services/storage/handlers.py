"""Every task kind of the storage capability, in one list the platform registers."""

from __future__ import annotations

from nubis.services.storage.volume_moves import MoveHandler
from nubis.services.storage.volume_snapshot_tasks import VolumeSnapshotTasks
from nubis.services.storage.volume_tasks import VolumeTasks
from nubis.services.storage.volume_transfers import VolumeTransfers
from nubis.tasks.engine import TaskHandler


def handlers(
    volumes: VolumeTasks, snapshots: VolumeSnapshotTasks, transfers: VolumeTransfers
) -> list[TaskHandler]:
    return [
        *volumes.handlers(),
        MoveHandler(volumes),
        *snapshots.handlers(),
        *transfers.handlers(),
    ]
