"""Task handlers of volume snapshots: create (frozen copy when the volume is in use by
a running instance), revert (a new generation of the volume's file), delete. In a
Ceph RBD pool a snapshot is Ceph's own (``drivers/rbd_images.py``): taken at once,
even under a running guest, reverted in place, removed in place.

Every step is idempotent, so the handlers are resumable: a copy replaces a partial
one, a freeze is skipped when the disk is on its overlay already, a merge when it is
off it, the generation switch is recorded once. ``failed`` leaves no half-made copy
and never leaves a running disk on a temporary overlay.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import delete, select, update

from nubis.db.models import (
    Host,
    Instance,
    StoragePool,
    Volume,
    VolumeAttachment,
    VolumeSnapshot,
    VolumeSnapshotStatus,
    volume_file_name,
)
from nubis.db.session import Database
from nubis.drivers import rbd_images
from nubis.drivers.errors import DriverError
from nubis.drivers.libvirt.base import HostRef
from nubis.drivers.libvirt.volumes import PoolSpec, VolumeDriver
from nubis.services.inventory.hosts import HostService
from nubis.services.storage.pools import one_host, spec_of
from nubis.services.storage.volumes import disk_spec, pool_file, release_hold, volume_path
from nubis.tasks.engine import TaskContext, TaskEngine, TaskHandler

log = logging.getLogger(__name__)


def rbd_snapshot_name(snapshot_id: str) -> str:
    """The name of a volume snapshot's RBD snapshot, on the volume's image."""
    return f"nubis-vsnap-{snapshot_id}"


@dataclass
class Loaded:
    snapshot: VolumeSnapshot
    volume: Volume
    pool: StoragePool
    ref: HostRef  # a host of the pool

    @property
    def snapshot_path(self) -> str:
        return pool_file(self.pool, self.snapshot.libvirt_name)

    @property
    def overlay_name(self) -> str:
        """The overlay the guest writes into while the volume is frozen."""
        return f"nubis-vsnap-{self.snapshot.id}.overlay.qcow2"


@dataclass
class User:
    """An instance the volume is attached to: where, and as which device."""

    instance_id: str
    ref: HostRef
    attachment: VolumeAttachment


class VolumeSnapshotTasks:
    def __init__(self, engine: TaskEngine, driver: VolumeDriver, hosts: HostService) -> None:
        self.db: Database = engine.db
        self.driver = driver
        self.hosts = hosts

    def handlers(self) -> list[TaskHandler]:
        return [CreateHandler(self), RevertHandler(self), DeleteHandler(self)]

    def load(self, snapshot_id: str) -> Loaded | None:
        with self.db.begin() as s:
            snapshot = s.get(VolumeSnapshot, snapshot_id)
            if snapshot is None:
                return None
            volume = s.get(Volume, snapshot.volume_id)
            assert volume is not None
            pool = s.get(StoragePool, volume.pool_id)
            assert pool is not None
            return Loaded(snapshot, volume, pool, one_host(s, pool, self.hosts))

    def users(self, volume_id: str) -> list[User]:
        with self.db.begin() as s:
            rows = s.execute(
                select(VolumeAttachment, Host)
                .join(Instance, Instance.id == VolumeAttachment.instance_id)
                .join(Host, Host.id == Instance.host_id)
                .where(VolumeAttachment.volume_id == volume_id)
            ).all()
            return [User(a.instance_id, self.hosts.ref(h), a) for a, h in rows]

    def rbd(self, loaded: Loaded) -> PoolSpec | None:
        """The pool with its key when the volume is an RBD image, else None."""
        return spec_of(loaded.pool, self.hosts.box) if loaded.pool.kind == "rbd" else None

    def rbd_delete(self, spec: PoolSpec, loaded: Loaded) -> None:
        """Remove the snapshot from the volume's image, if it is there."""
        image, snap = loaded.volume.libvirt_name, rbd_snapshot_name(loaded.snapshot.id)
        if snap in rbd_images.snapshots(spec, image):
            rbd_images.unprotect(spec, image, snap)  # protected by the clones made of it
            rbd_images.snapshot_delete(spec, image, snap)

    def remove_file(self, loaded: Loaded, name: str) -> None:
        """Remove a file of the volume's pool, wiped first for a secure-delete volume."""
        if loaded.volume.secure_delete:
            self.driver.wipe_volume(loaded.ref, loaded.pool.libvirt_name, name)
        self.driver.delete_volume(loaded.ref, loaded.pool.libvirt_name, name)

    def release(self, loaded: Loaded, hold: str, **snapshot_values: object) -> None:
        """End the operation: the snapshot, the volume and its instances are free."""
        with self.db.begin() as s:
            s.execute(
                update(VolumeSnapshot)
                .where(VolumeSnapshot.id == loaded.snapshot.id)
                .values(task_state=None, **snapshot_values)
            )
            release_hold(s, loaded.volume.id, hold)


class _Handler:
    resumable = True

    def __init__(self, tasks: VolumeSnapshotTasks) -> None:
        self.t = tasks

    def _load(self, ctx: TaskContext) -> Loaded:
        loaded = self.t.load(ctx.resource_id)
        if loaded is None:
            raise LookupError("the volume snapshot record is gone")
        return loaded


class CreateHandler(_Handler):
    kind = "volume.snapshot"
    steps = ("freeze", "copy", "merge")

    def run(self, ctx: TaskContext) -> None:
        loaded = self._load(ctx)
        spec = self.t.rbd(loaded)
        if spec is not None:  # Ceph's own snapshot: no freeze, no copy
            ctx.step("copy", 30)
            image, snap = loaded.volume.libvirt_name, rbd_snapshot_name(loaded.snapshot.id)
            if snap not in rbd_images.snapshots(spec, image):
                rbd_images.snapshot_create(spec, image, snap)
            self.t.release(
                loaded, "snapshotting", status=VolumeSnapshotStatus.AVAILABLE, error=None
            )
            return
        live = self._live_user(loaded)
        base = volume_path(loaded.pool, loaded.volume)
        if live is not None:
            overlay = pool_file(loaded.pool, loaded.overlay_name)
            ctx.step("freeze", 10)
            _active, source = self.t.driver.disk_source(
                live.ref, live.instance_id, live.attachment.target
            )
            if source != overlay:  # not frozen yet: an overlay file is a stale one
                self.t.driver.delete_volume(
                    loaded.ref, loaded.pool.libvirt_name, loaded.overlay_name
                )
                self.t.driver.freeze_disk(
                    live.ref, live.instance_id, live.attachment.target, overlay
                )
        ctx.step("copy", 30)
        self.t.driver.copy_volume(
            loaded.ref,
            loaded.pool.libvirt_name,
            loaded.snapshot.libvirt_name,
            base,
            loaded.volume.format,
            "qcow2",
        )
        if live is not None:
            ctx.step("merge", 80)
            self._merge(loaded, live)
        self.t.release(loaded, "snapshotting", status=VolumeSnapshotStatus.AVAILABLE, error=None)

    def _live_user(self, loaded: Loaded) -> User | None:
        if loaded.snapshot.live_instance_id is None:
            return None
        for user in self.t.users(loaded.volume.id):
            if user.instance_id == loaded.snapshot.live_instance_id:
                return user
        raise LookupError("the instance the volume was attached to is gone")

    def _merge(self, loaded: Loaded, live: User) -> None:
        base = volume_path(loaded.pool, loaded.volume)
        self.t.driver.merge_disk(live.ref, live.instance_id, live.attachment.target, base)
        self.t.remove_file(loaded, loaded.overlay_name)

    def failed(self, ctx: TaskContext, error: str) -> None:
        loaded = self.t.load(ctx.resource_id)
        if loaded is None:
            return
        try:
            spec = self.t.rbd(loaded)
            if spec is not None:
                self.t.rbd_delete(spec, loaded)
            else:
                live = self._live_user(loaded)
                if live is not None:  # never leave the guest's disk on the overlay
                    self._merge(loaded, live)
                self.t.remove_file(loaded, loaded.snapshot.libvirt_name)
        except (DriverError, LookupError) as exc:
            log.error("volume snapshot %s: clean-up failed: %s", ctx.resource_id, exc)
            self.t.release(
                loaded,
                "snapshotting",
                status=VolumeSnapshotStatus.ERROR,
                error=f"{error}; clean-up failed: {exc}",
            )
            return
        self.t.release(loaded, "snapshotting")
        with self.t.db.begin() as s:
            s.execute(delete(VolumeSnapshot).where(VolumeSnapshot.id == ctx.resource_id))


class RevertHandler(_Handler):
    """The snapshot is copied into the volume's next generation, the database switches
    to it, the stopped instances' definitions follow, the old file goes."""

    kind = "volume.snapshot-revert"
    steps = ("copy", "switch", "redefine", "cleanup")

    def run(self, ctx: TaskContext) -> None:
        loaded = self._load(ctx)
        spec = self.t.rbd(loaded)
        if spec is not None:  # rolled back in place: the same image, no new generation
            ctx.step("copy", 10)
            snap = rbd_snapshot_name(loaded.snapshot.id)
            rbd_images.snapshot_revert(spec, loaded.volume.libvirt_name, snap)
            self.t.release(loaded, "reverting")
            with self.t.db.begin() as s:
                s.execute(
                    update(Volume)
                    .where(Volume.id == loaded.volume.id)
                    .values(size_gib=loaded.snapshot.size_gib, error=None)
                )
            return
        target = int(ctx.params["generation"])
        vol = loaded.volume
        if vol.generation != target:
            ctx.step("copy", 10)
            new_name = volume_file_name(vol.id, vol.format, target)
            self.t.driver.copy_volume(
                loaded.ref,
                loaded.pool.libvirt_name,
                new_name,
                loaded.snapshot_path,
                "qcow2",
                vol.format,
            )
            ctx.step("switch", 70)
            with self.t.db.begin() as s:
                s.execute(
                    update(Volume)
                    .where(Volume.id == vol.id)
                    .values(generation=target, size_gib=loaded.snapshot.size_gib)
                )
        self._follow(ctx, target)
        self.t.release(self._load(ctx), "reverting")
        with self.t.db.begin() as s:
            s.execute(update(Volume).where(Volume.id == vol.id).values(error=None))

    def _follow(self, ctx: TaskContext, target: int) -> None:
        """Point the stopped instances at the new file, then remove the old one."""
        loaded = self._load(ctx)  # at the new generation
        old = Volume(
            id=loaded.volume.id,
            format=loaded.volume.format,
            generation=target - 1,
            shareable=loaded.volume.shareable,
        )
        ctx.step("redefine", 80)
        for user in self.t.users(loaded.volume.id):
            self.t.driver.replace_disk(
                user.ref,
                user.instance_id,
                disk_spec(loaded.pool, old, user.attachment),
                disk_spec(loaded.pool, loaded.volume, user.attachment),
            )
        ctx.step("cleanup", 90)
        self.t.remove_file(loaded, old.libvirt_name)

    def failed(self, ctx: TaskContext, error: str) -> None:
        loaded = self.t.load(ctx.resource_id)
        if loaded is None:
            return
        target = int(ctx.params["generation"])
        vol = loaded.volume
        try:
            if self.t.rbd(loaded) is not None:
                pass  # a rollback cut short: the image is part old, part new (says error)
            elif vol.generation != target:  # not switched: the old data stays, the copy goes
                self.t.driver.delete_volume(
                    loaded.ref,
                    loaded.pool.libvirt_name,
                    volume_file_name(vol.id, vol.format, target),
                )
            else:  # switched: finish pointing the instances at the new file
                self._follow(ctx, target)
        except (DriverError, LookupError) as exc:
            error = f"{error}; clean-up failed: {exc}"
        self.t.release(loaded, "reverting")
        with self.t.db.begin() as s:
            s.execute(
                update(Volume).where(Volume.id == vol.id).values(error=f"revert failed: {error}")
            )


class DeleteHandler(_Handler):
    kind = "volume.snapshot-delete"
    steps = ("delete",)

    def run(self, ctx: TaskContext) -> None:
        loaded = self.t.load(ctx.resource_id)
        if loaded is None:
            return  # a re-run after the record was removed
        ctx.step("delete", 20)
        spec = self.t.rbd(loaded)
        if spec is not None:
            self.t.rbd_delete(spec, loaded)
        else:
            self.t.remove_file(loaded, loaded.snapshot.libvirt_name)
        with self.t.db.begin() as s:
            s.execute(delete(VolumeSnapshot).where(VolumeSnapshot.id == ctx.resource_id))

    def failed(self, ctx: TaskContext, error: str) -> None:
        with self.t.db.begin() as s:
            s.execute(
                update(VolumeSnapshot)
                .where(VolumeSnapshot.id == ctx.resource_id)
                .values(task_state=None, error=f"delete failed: {error}")
            )
