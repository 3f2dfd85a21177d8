"""Volume snapshots: point-in-time copies of one volume, kept in its pool.

In a Ceph RBD pool a snapshot is an RBD snapshot of the volume's image: taken at
once (copy-on-write inside Ceph), crash-consistent under a running guest without a
freeze, reverted in place (rolled back) while no running guest uses the volume, and
copied into a new volume of the same pool. What follows is the way of file pools.

A snapshot is a flattened qcow2 copy made through libvirt (``qemu-img convert``),
independent of the volume and of every other snapshot: any can be reverted to,
made into a new volume, or deleted, in any order, and a long series behaves like a
short one (there is no chain to merge). The price is the copy: time and space in
proportion to the data, as with CloudStack's volume snapshots.

A volume attached to a running instance is frozen for the copy: its disk gets a
qcow2 overlay for the guest's writes (an external disk-only snapshot of that disk
alone), the file under it is copied, and the overlay is merged back (active block
commit, then pivot). The guest runs on throughout. Without a guest agent the copy
is crash-consistent, like pulling the power at that moment.

Reverting replaces the volume's data: the snapshot is copied into a new file (the
volume's next *generation*) beside the old one, the switch is one database update,
then the old file is removed (wiped first for secure-delete volumes). The volume
must not be in use by a running instance.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from nubis.db.models import (
    InstanceStatus,
    Snapshot,
    StoragePool,
    Task,
    Volume,
    VolumeSnapshot,
    VolumeSnapshotStatus,
    VolumeStatus,
)
from nubis.services.core.errors import BadRequest, Conflict
from nubis.services.core.guard import claim
from nubis.services.core.lookup import get_by_id_or_name, validate_name
from nubis.services.core.principal import Principal
from nubis.services.core.submit import submit_task
from nubis.services.identity import quotas
from nubis.services.storage.volumes import VolumeService, files_only, volume_users

RUNNING = (InstanceStatus.RUNNING, InstanceStatus.PAUSED)


class VolumeSnapshotService:
    def __init__(self, volumes: VolumeService) -> None:
        self.volumes = volumes
        self.engine = volumes.engine

    def find(
        self, session: Session, principal: Principal, volume_ref: str, ref: str
    ) -> tuple[Volume, VolumeSnapshot]:
        volume = self.volumes.get(session, principal, volume_ref)
        snapshot = get_by_id_or_name(
            session, VolumeSnapshot, ref, "volume snapshot", volume_id=volume.id
        )
        return volume, snapshot

    def find_all(
        self, session: Session, principal: Principal, volume_ref: str
    ) -> list[VolumeSnapshot]:
        volume = self.volumes.get(session, principal, volume_ref)
        return list(
            session.scalars(
                select(VolumeSnapshot)
                .where(VolumeSnapshot.volume_id == volume.id)
                .order_by(VolumeSnapshot.created_at, VolumeSnapshot.id)
            ).all()
        )

    def create(
        self, session: Session, principal: Principal, volume_ref: str, name: str
    ) -> tuple[VolumeSnapshot, Task]:
        validate_name(name, "volume snapshot")
        volume = self.volumes.get(session, principal, volume_ref)
        taken = session.scalar(
            select(VolumeSnapshot).where(
                VolumeSnapshot.volume_id == volume.id, VolumeSnapshot.name == name
            )
        )
        if taken is not None:
            raise Conflict(f"volume {volume.name!r} already has a snapshot named {name!r}")
        users = volume_users(session, volume.id)
        # a nonpersistent disk's guest writes to a throw-away overlay: its file holds still
        live = [i for a, i in users if i.status in RUNNING and a.mode == "persistent"]
        if len(live) > 1:
            raise Conflict(
                f"volume {volume.name!r} is in use by several running instances "
                f"({', '.join(i.name for i in live)}): only one can be frozen for a snapshot; "
                "stop the others"
            )
        pool = session.get(StoragePool, volume.pool_id)
        assert pool is not None
        if pool.kind != "rbd":  # RBD: Ceph's own snapshots (volume_snapshot_tasks.py)
            files_only(pool, "a volume snapshot")
        if pool.kind == "lvm":
            raise BadRequest(
                f"volume {volume.name!r} is in LVM pool {pool.name!r}: volume snapshots are "
                "made in file pools (dir, shared, nfs) only"
            )
        claim(
            session, volume, (VolumeStatus.AVAILABLE, VolumeStatus.IN_USE), "snapshotting", "volume"
        )
        for _attachment, instance in users:
            claim(
                session,
                instance,
                (InstanceStatus.RUNNING, InstanceStatus.PAUSED, InstanceStatus.STOPPED),
                "snapshotting",
                "instance",
            )
        quotas.claim(session, volume.project_id, {"snapshots": 1})
        snapshot = VolumeSnapshot(
            name=name,
            project_id=volume.project_id,
            volume_id=volume.id,
            size_gib=volume.size_gib,
            live_instance_id=live[0].id if live else None,
            status=VolumeSnapshotStatus.CREATING,
            task_state="creating",
        )
        session.add(snapshot)
        session.flush()
        return snapshot, submit_task(
            self.engine, session, principal, "volume.snapshot", "volume-snapshot", snapshot.id
        )

    def revert(
        self, session: Session, principal: Principal, volume_ref: str, ref: str
    ) -> tuple[VolumeSnapshot, Task]:
        volume, snapshot = self.find(session, principal, volume_ref, ref)
        if snapshot.status != VolumeSnapshotStatus.AVAILABLE or snapshot.task_state is not None:
            raise Conflict(
                f"volume snapshot {snapshot.name!r} is {snapshot.task_state or snapshot.status}"
            )
        users = volume_users(session, volume.id)
        running = [i.name for _a, i in users if i.status != InstanceStatus.STOPPED]
        if running:
            raise Conflict(
                f"volume {volume.name!r} is attached to {', '.join(running)}, not stopped: "
                "stop or detach first (a guest would see its disk change under it)"
            )
        covering = [
            s.name
            for _a, i in users
            for s in session.scalars(select(Snapshot).where(Snapshot.instance_id == i.id))
            if volume.id in (s.volume_ids or [])
        ]
        if covering:
            raise Conflict(
                f"instance snapshot(s) {', '.join(covering)} live inside volume "
                f"{volume.name!r}'s file: delete them before reverting it"
            )
        claim(session, volume, (VolumeStatus.AVAILABLE, VolumeStatus.IN_USE), "reverting", "volume")
        for _attachment, instance in users:
            claim(session, instance, (InstanceStatus.STOPPED,), "reverting", "instance")
        snapshot.task_state = "reverting"
        return snapshot, submit_task(
            self.engine,
            session,
            principal,
            "volume.snapshot-revert",
            "volume-snapshot",
            snapshot.id,
            {"generation": volume.generation + 1},
        )

    def delete(
        self, session: Session, principal: Principal, volume_ref: str, ref: str
    ) -> tuple[VolumeSnapshot, Task]:
        _volume, snapshot = self.find(session, principal, volume_ref, ref)
        clones = list(
            session.scalars(
                select(Volume.name)
                .where(Volume.base_snapshot_id == snapshot.id)
                .order_by(Volume.name)
            )
        )
        if clones:  # RBD clones of it: Ceph keeps the snapshot while they exist
            raise Conflict(
                f"volume snapshot {snapshot.name!r} has RBD clones: volume(s) "
                f"{', '.join(clones)}; delete them (or move them to another pool) first"
            )
        claim(session, snapshot, None, "deleting", "volume snapshot")
        return snapshot, submit_task(
            self.engine,
            session,
            principal,
            "volume.snapshot-delete",
            "volume-snapshot",
            snapshot.id,
        )
