"""Task handlers for volumes: create, delete (with secure wipe), extend, attach, detach.

Every step is idempotent (libvirt objects are named from the volume's id; attach
looks at the domain's disks before plugging), so every handler is resumable: after
a crash the task simply runs again. ``failed`` puts the records back into a true
state and removes whatever a half-done step left.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select, update

from nubis.db.models import (
    AttachmentStatus,
    Host,
    Image,
    ImageStatus,
    Instance,
    InstanceStatus,
    StoragePool,
    Volume,
    VolumeAttachment,
    VolumeSnapshot,
    VolumeStatus,
)
from nubis.db.session import Database
from nubis.drivers import rbd_images
from nubis.drivers.errors import DriverError
from nubis.drivers.libvirt.base import HostRef
from nubis.drivers.libvirt.domain_xml import DiskSpec
from nubis.drivers.libvirt.volumes import PoolSpec, VolumeDriver
from nubis.services.inventory.hosts import HostService
from nubis.services.storage import rbd_bases
from nubis.services.storage.images import CHUNK, ImageService
from nubis.services.storage.pools import one_host, spec_of
from nubis.services.storage.rbd_bases import BaseSource, RbdBases, RbdPool
from nubis.services.storage.volume_snapshot_tasks import rbd_snapshot_name
from nubis.services.storage.volumes import GIB, attachment_count, disk_spec, pool_file
from nubis.tasks.engine import TaskContext, TaskEngine, TaskHandler

log = logging.getLogger(__name__)
LUN_BLOCK = 4096
# a crashed host's QEMU keeps watching the RBD images it had open until Ceph expires
# the watch (osd_client_watch_timeout, 30 s by default); Ceph refuses their removal
# until then
RBD_WATCH_EXPIRY = 60.0


@dataclass
class Loaded:
    volume: Volume
    pool_name: str
    ref: HostRef  # a host through which the pool is reached
    pool_kind: str = ""


@dataclass
class LoadedAttachment:
    attachment: VolumeAttachment
    volume: Volume
    instance: Instance
    disk: DiskSpec  # the <disk> it puts into the domain
    ref: HostRef  # the instance's host


class VolumeTasks:
    def __init__(
        self, engine: TaskEngine, driver: VolumeDriver, hosts: HostService, images: ImageService
    ) -> None:
        self.db: Database = engine.db
        self.driver = driver
        self.images = images
        self.hosts = hosts
        self.bases = RbdBases(self.db, driver, hosts)

    def handlers(self) -> list[TaskHandler]:
        return [
            CreateHandler(self),
            DeleteHandler(self),
            ExtendHandler(self),
            AttachHandler(self),
            DetachHandler(self),
        ]

    def load(self, volume_id: str) -> Loaded:
        with self.db.begin() as s:
            volume = s.get(Volume, volume_id)
            if volume is None:
                raise LookupError(f"volume {volume_id} no longer exists")
            pool = s.get(StoragePool, volume.pool_id)
            assert pool is not None
            return Loaded(volume, pool.libvirt_name, one_host(s, pool, self.hosts), pool.kind)

    def load_attachment(self, attachment_id: str) -> LoadedAttachment | None:
        with self.db.begin() as s:
            attachment = s.get(VolumeAttachment, attachment_id)
            if attachment is None:
                return None
            volume = s.get(Volume, attachment.volume_id)
            instance = s.get(Instance, attachment.instance_id)
            assert volume is not None and instance is not None
            pool = s.get(StoragePool, volume.pool_id)
            host = s.get(Host, instance.host_id)
            assert pool is not None and host is not None
            return LoadedAttachment(
                attachment,
                volume,
                instance,
                disk_spec(pool, volume, attachment),
                self.hosts.ref(host),
            )

    def allocate(self, loaded: Loaded) -> None:
        vol = loaded.volume
        self.driver.create_volume(
            loaded.ref,
            loaded.pool_name,
            vol.libvirt_name,
            vol.size_gib * GIB,
            vol.format,
            vol.provisioning,
        )

    def fill_from_image(self, loaded: Loaded, image_id: str) -> None:
        """The image's disk as the volume: in RBD an RBD clone of the image's base in
        the pool (see ``rbd_bases``); in a file pool the image's file streamed in as it
        is (qcow2 or raw, as the volume is recorded); grown to the volume's size."""
        vol = loaded.volume
        with self.db.read() as s:
            image = s.get(Image, image_id)
            pool = s.get(StoragePool, vol.pool_id)
            if image is None or image.status != ImageStatus.ACTIVE:
                raise LookupError("the image was deleted")
            assert pool is not None
            path, fmt = self.images.path(image), image.disk_format or "qcow2"
            spec = spec_of(pool, self.hosts.box) if pool.kind == "rbd" else None
            source = BaseSource(image.id, path, fmt, image.virtual_size or path.stat().st_size)
        if spec is not None:
            rbd_bases.clone(
                self.driver,
                RbdPool(vol.pool_id, loaded.ref, loaded.pool_name, spec),
                source,
                vol.libvirt_name,
                vol.size_gib * GIB,
            )
            return
        if fmt != vol.format:
            raise DriverError(f"the image is {fmt}, the volume {vol.format}")
        upload = self.driver.open_upload(
            loaded.ref, loaded.pool_name, vol.libvirt_name, path.stat().st_size
        )
        try:
            with open(path, "rb") as fh:
                while chunk := fh.read(CHUNK):
                    upload.write(chunk)
            upload.finish()
        except BaseException:
            upload.abort()
            raise
        self.driver.resize_volume(
            loaded.ref, loaded.pool_name, vol.libvirt_name, vol.size_gib * GIB, vol.format
        )

    def make_root(self, volume_id: str, image_id: str) -> None:
        """Make an instance's root volume from its image (its create task's step); a
        volume already made is left as it is."""
        loaded = self.load(volume_id)
        if loaded.volume.status != VolumeStatus.CREATING:
            return
        self.fill_from_image(loaded, image_id)
        self.settle(volume_id, status=VolumeStatus.IN_USE, error=None)

    def remove_data(self, volume_id: str, step: Callable[[str, int], None] | None = None) -> None:
        """The volume's data leaves its pool, overwritten first if it is secure-delete
        (its row stays: the caller removes it); a LUN goes back to the SAN, kept.
        ``step``: a task's, told of each step."""
        try:
            loaded = self.load(volume_id)
        except LookupError:
            return  # a re-run after the row was removed
        if loaded.volume.secure_delete:
            if step is not None:
                step("wipe", 10)
            self.driver.wipe_volume(loaded.ref, loaded.pool_name, loaded.volume.libvirt_name)
        if step is not None:
            step("delete", 80)
        if loaded.volume.lun is None:
            self.delete_data(loaded)

    def delete_data(self, loaded: Loaded) -> None:
        """Remove the volume from its pool; an RBD image a crashed host's QEMU had open
        is tried again until Ceph has expired that client's watch."""
        deadline = time.monotonic() + RBD_WATCH_EXPIRY
        while True:
            try:
                self.driver.delete_volume(loaded.ref, loaded.pool_name, loaded.volume.libvirt_name)
                return
            except DriverError as exc:
                if loaded.pool_kind != "rbd" or time.monotonic() > deadline:
                    raise
                log.info("volume %s not removed yet (%s): trying again", loaded.volume.id, exc)
                time.sleep(2)

    def settle(self, volume_id: str, **values: object) -> None:
        with self.db.begin() as s:
            s.execute(
                update(Volume).where(Volume.id == volume_id).values(task_state=None, **values)
            )

    def end_attachment_op(self, volume_id: str, instance_id: str) -> None:
        """Clear the operation on the volume and the instance; the volume is in-use
        while any attachment is left."""
        with self.db.begin() as s:
            left = attachment_count(s, volume_id)
            s.execute(
                update(Volume)
                .where(Volume.id == volume_id)
                .values(
                    task_state=None, status=VolumeStatus.IN_USE if left else VolumeStatus.AVAILABLE
                )
            )
            s.execute(update(Instance).where(Instance.id == instance_id).values(task_state=None))


class _Handler:
    resumable = True

    def __init__(self, tasks: VolumeTasks) -> None:
        self.t = tasks


class CreateHandler(_Handler):
    kind = "volume.create"
    steps = ("copy", "allocate")

    def run(self, ctx: TaskContext) -> None:
        loaded = self.t.load(ctx.resource_id)
        vol = loaded.volume
        snapshot_id = ctx.params.get("snapshot_id")
        if snapshot_id:  # a copy of a volume snapshot (in the same pool)
            ctx.step("copy", 10)
            path, rbd = self._snapshot_source(snapshot_id)
            if rbd is not None:  # an RBD clone of the snapshot (kept while it exists)
                spec, image, snap = rbd
                capacity = vol.size_gib * GIB
                rbd_images.clone_snapshot(spec, image, snap, vol.libvirt_name, capacity)
            else:
                self.t.driver.copy_volume(
                    loaded.ref,
                    loaded.pool_name,
                    vol.libvirt_name,
                    path,
                    "qcow2",  # every volume snapshot of a file pool is a flattened qcow2
                    vol.format,
                    vol.size_gib * GIB,
                )
            self._release_snapshot(snapshot_id)
        elif ctx.params.get("image_id"):
            ctx.step("copy", 10)
            self.t.fill_from_image(loaded, ctx.params["image_id"])
        elif vol.lun is not None:  # a LUN the SAN made: it must be there, big enough
            ctx.step("allocate", 10)
            luns = self.t.driver.list_volumes(loaded.ref, loaded.pool_name)
            if vol.libvirt_name not in luns:
                raise DriverError(f"the target has no LUN {vol.lun}")
            # libvirt's iscsi-direct pool counts a LUN one block short (its last block's
            # address times the block size): a block of up to 4 KiB is let pass
            if luns[vol.libvirt_name] + LUN_BLOCK < vol.size_gib * GIB:
                raise DriverError(
                    f"LUN {vol.lun} holds {luns[vol.libvirt_name]} bytes, less than "
                    f"{vol.size_gib} GiB"
                )
        else:
            ctx.step("allocate", 10)
            self.t.allocate(loaded)
        self.t.settle(ctx.resource_id, status=VolumeStatus.AVAILABLE, error=None)

    def _snapshot_source(self, snapshot_id: str) -> tuple[str, tuple[PoolSpec, str, str] | None]:
        """Where the snapshot's data is: the path of its copy in a file pool, and for an
        RBD snapshot the pool, the volume's image and the snapshot's name."""
        with self.t.db.begin() as s:
            snapshot = s.get(VolumeSnapshot, snapshot_id)
            if snapshot is None:
                raise LookupError("the volume snapshot was deleted")
            origin = s.get(Volume, snapshot.volume_id)
            assert origin is not None
            pool = s.get(StoragePool, origin.pool_id)
            assert pool is not None
            rbd = None
            if pool.kind == "rbd":
                spec = spec_of(pool, self.t.hosts.box)
                rbd = (spec, origin.libvirt_name, rbd_snapshot_name(snapshot.id))
            return pool_file(pool, snapshot.libvirt_name), rbd

    def _release_snapshot(self, snapshot_id: str) -> None:
        with self.t.db.begin() as s:
            s.execute(
                update(VolumeSnapshot)
                .where(VolumeSnapshot.id == snapshot_id, VolumeSnapshot.task_state == "cloning")
                .values(task_state=None)
            )

    def failed(self, ctx: TaskContext, error: str) -> None:
        try:
            loaded = self.t.load(ctx.resource_id)
            if loaded.volume.lun is None:  # a LUN is the SAN's: never removed here
                self.t.driver.delete_volume(
                    loaded.ref, loaded.pool_name, loaded.volume.libvirt_name
                )
        except (LookupError, DriverError) as exc:
            log.warning("could not remove the half-created volume %s: %s", ctx.resource_id, exc)
        if ctx.params.get("snapshot_id"):
            self._release_snapshot(ctx.params["snapshot_id"])
        self.t.settle(ctx.resource_id, status=VolumeStatus.ERROR, error=f"create failed: {error}")


class DeleteHandler(_Handler):
    kind = "volume.delete"
    steps = ("wipe", "delete")

    def run(self, ctx: TaskContext) -> None:
        self.t.remove_data(ctx.resource_id, ctx.step)
        with self.t.db.begin() as s:
            volume = s.get(Volume, ctx.resource_id)
            if volume is not None:
                s.delete(volume)

    def failed(self, ctx: TaskContext, error: str) -> None:
        self.t.settle(ctx.resource_id, status=VolumeStatus.ERROR, error=f"delete failed: {error}")


class ExtendHandler(_Handler):
    kind = "volume.extend"
    steps = ("resize",)

    def run(self, ctx: TaskContext) -> None:
        loaded = self.t.load(ctx.resource_id)
        size = int(ctx.params["size_gib"])
        running = self._running_attachment(ctx.resource_id)
        ctx.step("resize", 20)
        if running is not None:  # QEMU holds the image: it must do the resize
            self.t.driver.block_resize(
                running.ref, running.instance.id, running.attachment.target, size * GIB
            )
        else:
            self.t.driver.resize_volume(
                loaded.ref,
                loaded.pool_name,
                loaded.volume.libvirt_name,
                size * GIB,
                loaded.volume.format,
            )
        self.t.settle(ctx.resource_id, size_gib=size, error=None)

    def _running_attachment(self, volume_id: str) -> LoadedAttachment | None:
        with self.t.db.begin() as s:
            ids = s.scalars(
                select(VolumeAttachment.id)
                .join(Instance, Instance.id == VolumeAttachment.instance_id)
                .where(
                    VolumeAttachment.volume_id == volume_id,
                    Instance.status.in_((InstanceStatus.RUNNING, InstanceStatus.PAUSED)),
                )
            ).all()
        return self.t.load_attachment(ids[0]) if ids else None

    def failed(self, ctx: TaskContext, error: str) -> None:
        self.t.settle(ctx.resource_id, error=f"extend failed: {error}")


class AttachHandler(_Handler):
    kind = "volume.attach"
    steps = ("plug",)

    def run(self, ctx: TaskContext) -> None:
        la = self.t.load_attachment(ctx.params["attachment_id"])
        if la is None:
            raise RuntimeError("the attachment record is gone")
        ctx.step("plug", 30)
        disks = self.t.driver.attached_targets(la.ref, la.instance.id)
        if la.attachment.target not in disks:
            self.t.driver.attach_disk(la.ref, la.instance.id, la.disk)
        with self.t.db.begin() as s:
            s.execute(
                update(VolumeAttachment)
                .where(VolumeAttachment.id == la.attachment.id)
                .values(status=AttachmentStatus.ATTACHED)
            )
        self.t.end_attachment_op(la.volume.id, la.instance.id)

    def failed(self, ctx: TaskContext, error: str) -> None:
        la = self.t.load_attachment(ctx.params["attachment_id"])
        if la is None:
            return
        try:  # unplug whatever half of it got in, then forget it
            if la.attachment.target in self.t.driver.attached_targets(la.ref, la.instance.id):
                self.t.driver.detach_disk(la.ref, la.instance.id, la.disk)
        except DriverError as exc:
            log.warning("could not undo the attachment %s: %s", la.attachment.id, exc)
        with self.t.db.begin() as s:
            attachment = s.get(VolumeAttachment, la.attachment.id)
            if attachment is not None:
                s.delete(attachment)
        self.t.end_attachment_op(la.volume.id, la.instance.id)
        with self.t.db.begin() as s:
            s.execute(
                update(Volume)
                .where(Volume.id == la.volume.id)
                .values(error=f"attach failed: {error}")
            )


class DetachHandler(_Handler):
    kind = "volume.detach"
    steps = ("unplug",)

    def run(self, ctx: TaskContext) -> None:
        la = self.t.load_attachment(ctx.params["attachment_id"])
        if la is None:
            return  # a re-run after the record was removed
        ctx.step("unplug", 30)
        if la.attachment.target in self.t.driver.attached_targets(la.ref, la.instance.id):
            self.t.driver.detach_disk(la.ref, la.instance.id, la.disk)
        with self.t.db.begin() as s:
            attachment = s.get(VolumeAttachment, la.attachment.id)
            if attachment is not None:
                s.delete(attachment)
        self.t.end_attachment_op(la.volume.id, la.instance.id)

    def failed(self, ctx: TaskContext, error: str) -> None:
        la = self.t.load_attachment(ctx.params["attachment_id"])
        if la is None:
            return
        with self.t.db.begin() as s:
            s.execute(
                update(VolumeAttachment)
                .where(VolumeAttachment.id == la.attachment.id)
                .values(status=AttachmentStatus.ATTACHED)
            )
            s.execute(
                update(Volume)
                .where(Volume.id == la.volume.id)
                .values(error=f"detach failed: {error}")
            )
        self.t.end_attachment_op(la.volume.id, la.instance.id)
