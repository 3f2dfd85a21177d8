"""Uploading a disk image as a new volume, and downloading a volume, through libvirt
streams: the bytes go between the HTTP client and the volume's host chunk by chunk,
never whole in memory, and the host may be remote. RBD volumes go through a file
of the control plane and qemu-img instead (``rbd_transfers``).

Each transfer is a task begun inline (it runs inside its request) that reports
its progress as bytes move. An upload that fails, is cut short or carries bad
content removes its volume: nothing of it is left. If the control plane dies
mid-transfer, recovery at start-up fails the task and its handler cleans up.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import delete, update
from sqlalchemy.orm import Session

from nubis.db.models import DiskOffering, InstanceStatus, StoragePool, Volume, VolumeStatus
from nubis.db.session import Database
from nubis.drivers import rbd_images
from nubis.drivers.errors import DriverError
from nubis.drivers.libvirt.base import HostRef
from nubis.drivers.libvirt.streams import VolumeDownload, VolumeUpload
from nubis.drivers.libvirt.volumes import PoolSpec, VolumeDriver
from nubis.images.header import HeaderFacts, sniff
from nubis.images.inspect import ImageRejected
from nubis.services.core.errors import BadRequest, Conflict, Unavailable
from nubis.services.core.guard import claim
from nubis.services.core.lookup import get_by_id_or_name
from nubis.services.core.principal import Principal
from nubis.services.inventory.hosts import HostService
from nubis.services.storage.pools import one_host, spec_of
from nubis.services.storage.rbd_transfers import (
    RbdDownload,
    RbdUpload,
    remove_spooled,
    spool_file,
)
from nubis.services.storage.volumes import (
    GIB,
    MAX_GIB,
    VolumeRequest,
    VolumeService,
    files_only,
    release_hold,
    volume_users,
)
from nubis.tasks.engine import TaskContext, TaskEngine, TaskHandler

log = logging.getLogger(__name__)
RUNNING = (InstanceStatus.RUNNING, InstanceStatus.PAUSED)


@dataclass(frozen=True)
class UploadRequest:
    name: str
    length: int  # bytes the client announced (Content-Length)
    pool: str | None = None
    offering: str | None = None
    secure_delete: bool | None = None
    shareable: bool = False


class _Progress:
    """Task progress from a byte count, written at most every 2 percent."""

    def __init__(self, engine: TaskEngine, task_id: str, total: int) -> None:
        self.engine = engine
        self.task_id = task_id
        self.total = max(total, 1)
        self.shown = 0

    def update(self, done: int) -> None:
        percent = min(99, done * 100 // self.total)
        if percent >= self.shown + 2:
            self.shown = percent
            self.engine.report(self.task_id, percent)


class Upload:
    """One upload in flight: the API feeds it, then finishes or aborts it."""

    def __init__(
        self, transfers: VolumeTransfers, volume: Volume, task_id: str, facts: HeaderFacts
    ) -> None:
        self.t = transfers
        self.volume = volume
        self.task_id = task_id
        self.facts = facts
        self.stream: VolumeUpload | RbdUpload | None = None
        self.progress: _Progress | None = None
        self.length = 0

    def open(self, ref: HostRef, pool_name: str, length: int, rbd: PoolSpec | None) -> None:
        self.ref, self.pool_name, self.length = ref, pool_name, length
        name, size = self.volume.libvirt_name, self.volume.size_gib * GIB
        if rbd is None:
            self.stream = self.t.driver.open_upload(ref, pool_name, name, length)
        else:

            def store(path: Path) -> None:
                self.t.driver.create_volume(ref, pool_name, name, size, "raw", "thin")
                rbd_images.import_file(path, self.facts.disk_format, rbd, name)

            spooled = spool_file(self.t.spool, self.volume.id, "upload")
            self.stream = RbdUpload(spooled, self.facts.disk_format, size, store)
        self.progress = _Progress(self.t.engine, self.task_id, length)

    def write(self, data: bytes) -> None:
        assert self.stream is not None and self.progress is not None
        if self.stream.sent + len(data) > self.length:
            raise BadRequest(f"the body is longer than its Content-Length ({self.length})")
        self.stream.write(data)
        self.progress.update(self.stream.sent)

    def finish(self) -> Volume:
        """Check what arrived, grow it to whole GiB, and make the volume available."""
        assert self.stream is not None
        if self.stream.sent != self.length:
            raise BadRequest(f"the upload ended after {self.stream.sent} of {self.length} bytes")
        self.stream.finish()
        self.t.engine.fault_point("volume.upload", "finish")
        # what it is was read from its first bytes (header.sniff) before any was sent:
        # libvirt's guess at the file is never asked
        self.t.driver.resize_volume(
            self.ref,
            self.pool_name,
            self.volume.libvirt_name,
            self.volume.size_gib * GIB,
            self.volume.format,  # the upload's own in file pools; raw in RBD
        )
        with self.t.db.begin() as s:
            s.execute(
                update(Volume)
                .where(Volume.id == self.volume.id)
                .values(status=VolumeStatus.AVAILABLE, task_state=None, error=None)
            )
            volume = s.get(Volume, self.volume.id)
            assert volume is not None
        self.t.engine.finish(self.task_id)
        return volume

    def abort(self, error: str) -> None:
        if self.stream is not None:
            self.stream.abort()
        self.t.remove_upload(self.volume.id)
        self.t.engine.finish(self.task_id, error)


class Download:
    """One download in flight: the API drains it, then closes it."""

    def __init__(
        self,
        transfers: VolumeTransfers,
        volume: Volume,
        task_id: str,
        stream: VolumeDownload | RbdDownload,
    ) -> None:
        self.t = transfers
        self.volume = volume
        self.task_id = task_id
        self.stream = stream
        self.length = stream.length
        qcow2 = volume.format == "qcow2" or isinstance(stream, RbdDownload)
        self.filename = f"{volume.name}.{'qcow2' if qcow2 else 'img'}"
        self.progress = _Progress(transfers.engine, task_id, stream.length)

    def read(self) -> bytes:
        data = self.stream.read()
        self.progress.update(self.stream.received)
        return data

    def close(self, complete: bool) -> None:
        error = None
        if complete and self.stream.received == self.length:
            try:
                self.stream.finish()
            except DriverError as exc:
                error = str(exc)
        else:
            self.stream.abort()
            error = f"the client went away after {self.stream.received} of {self.length} bytes"
        self.t.release(self.volume.id)
        self.t.engine.finish(self.task_id, error)


class VolumeTransfers:
    def __init__(
        self, volumes: VolumeService, driver: VolumeDriver, hosts: HostService, spool: Path
    ) -> None:
        self.spool = spool  # where RBD transfers pass through (rbd_transfers)
        self.volumes = volumes
        self.engine: TaskEngine = volumes.engine
        self.db: Database = volumes.engine.db
        self.driver = driver
        self.hosts = hosts

    def handlers(self) -> list[TaskHandler]:
        return [UploadHandler(self), DownloadHandler(self)]

    # -- upload ----------------------------------------------------------------------
    def start_upload(self, principal: Principal, req: UploadRequest, head: bytes) -> Upload:
        """Check the request and the image's first bytes, record the volume and the
        task, and open the stream into a new volume on a host of its pool."""
        try:
            facts = sniff(head, req.length)
        except ImageRejected as exc:
            raise BadRequest(str(exc)) from exc
        needed = max(1, math.ceil(facts.virtual_size / GIB))
        if needed > MAX_GIB:
            raise BadRequest(f"the image is {facts.virtual_size} bytes: volumes hold {MAX_GIB} GiB")
        with self.db.begin() as s:
            volume = self._plan(s, principal, req, facts, needed)
            pool = s.get(StoragePool, volume.pool_id)
            assert pool is not None
            rbd = spec_of(pool, self.hosts.box) if pool.kind == "rbd" else None
            if rbd is None:
                files_only(pool, "an upload")
            if req.length > pool.available_bytes:
                raise Conflict(
                    f"storage pool {pool.name!r} has {pool.available_bytes} bytes free; the "
                    f"upload is {req.length}"
                )
            ref = one_host(s, pool, self.hosts)
            pool_name = pool.libvirt_name
            volume.task_state = "uploading"
            s.add(volume)
            s.flush()
            task = self.engine.begin_inline(
                s,
                "volume.upload",
                "volume",
                volume.id,
                params={"bytes": req.length, "format": facts.disk_format},
                project_id=principal.project_id,
                user_id=principal.user_id,
            )
            s.flush()
        upload = Upload(self, volume, task.id, facts)
        try:
            self.engine.fault_point("volume.upload", "stream")
            upload.open(ref, pool_name, req.length, rbd)
        except Exception as exc:
            upload.abort(str(exc))
            raise
        return upload

    def _plan(
        self,
        session: Session,
        principal: Principal,
        req: UploadRequest,
        facts: HeaderFacts,
        needed_gib: int,
    ) -> Volume:
        size: int | None = needed_gib
        if req.offering:
            offering = get_by_id_or_name(session, DiskOffering, req.offering, "disk offering")
            if offering.format != facts.disk_format:
                raise BadRequest(
                    f"disk offering {offering.name!r} makes {offering.format} volumes; "
                    f"this image is {facts.disk_format}"
                )
            if offering.size_gib is not None:
                if offering.size_gib < needed_gib:
                    raise BadRequest(
                        f"the image needs {needed_gib} GiB; disk offering {offering.name!r} "
                        f"gives {offering.size_gib} GiB"
                    )
                size = None  # the offering's
        return self.volumes.plan(
            session,
            principal,
            VolumeRequest(
                name=req.name,
                size_gib=size,
                pool=req.pool,
                offering=req.offering,
                data_format=facts.disk_format,
                provisioning="thin",
                secure_delete=req.secure_delete,
                shareable=req.shareable,
            ),
        )

    def remove_upload(self, volume_id: str) -> None:
        """Remove a failed upload's volume: its data first, then (only once that is
        gone, so no disk is ever orphaned) its record."""
        with self.db.begin() as s:
            volume = s.get(Volume, volume_id)
            if volume is None:
                return
            pool = s.get(StoragePool, volume.pool_id)
            assert pool is not None
            name, pool_name = volume.libvirt_name, pool.libvirt_name
            try:
                ref: HostRef | None = one_host(s, pool, self.hosts)
            except Unavailable:
                ref = None
        remove_spooled(self.spool, volume_id)
        try:
            if ref is None:
                raise DriverError("no host of its pool is up")
            if volume.secure_delete:
                self.driver.wipe_volume(ref, pool_name, name)
            self.driver.delete_volume(ref, pool_name, name)
        except DriverError as exc:
            log.warning("could not remove the failed upload %s: %s", volume_id, exc)
            with self.db.begin() as s:
                s.execute(
                    update(Volume)
                    .where(Volume.id == volume_id)
                    .values(
                        status=VolumeStatus.ERROR, task_state=None, error=f"upload failed: {exc}"
                    )
                )
            return
        with self.db.begin() as s:
            s.execute(delete(Volume).where(Volume.id == volume_id))

    # -- download --------------------------------------------------------------------
    def start_download(self, principal: Principal, ref: str) -> Download:
        """Hold the volume (and the stopped instances it is attached to, so none
        starts and writes mid-copy) and open the stream out of it."""
        with self.db.begin() as s:
            volume = self.volumes.get(s, principal, ref)
            pool = s.get(StoragePool, volume.pool_id)
            assert pool is not None
            rbd = spec_of(pool, self.hosts.box) if pool.kind == "rbd" else None
            if rbd is None:
                files_only(pool, "a download")
            instances = [i for _a, i in volume_users(s, volume.id)]
            busy = [i.name for i in instances if i.status in RUNNING]
            if busy:
                raise Conflict(
                    f"volume {volume.name!r} is in use by running instance(s) "
                    f"{', '.join(busy)}: stop them or detach it to download a consistent copy"
                )
            claim(s, volume, (VolumeStatus.AVAILABLE, VolumeStatus.IN_USE), "downloading", "volume")
            for instance in instances:
                claim(
                    s,
                    instance,
                    (InstanceStatus.STOPPED, InstanceStatus.ERROR),
                    "downloading",
                    "instance",
                )
            host = one_host(s, pool, self.hosts)
            pool_name = pool.libvirt_name
            task = self.engine.begin_inline(
                s,
                "volume.download",
                "volume",
                volume.id,
                project_id=principal.project_id,
                user_id=principal.user_id,
            )
            s.flush()
        try:
            self.engine.fault_point("volume.download", "stream")
            stream: VolumeDownload | RbdDownload
            if rbd is None:
                stream = self.driver.open_download(host, pool_name, volume.libvirt_name)
            else:
                spooled = spool_file(self.spool, volume.id, "download")
                stream = RbdDownload(spooled, rbd, volume.libvirt_name)
        except DriverError as exc:
            self.release(volume.id)
            self.engine.finish(task.id, str(exc))
            raise
        return Download(self, volume, task.id, stream)

    def release(self, volume_id: str) -> None:
        """End a download's hold on the volume and its instances."""
        remove_spooled(self.spool, volume_id)
        with self.db.begin() as s:
            release_hold(s, volume_id, "downloading")


class UploadHandler:
    """Uploads run inside their request; this only cleans up after a crash."""

    kind = "volume.upload"
    steps = ("stream", "finish")
    resumable = False

    def __init__(self, transfers: VolumeTransfers) -> None:
        self.t = transfers

    def run(self, ctx: TaskContext) -> None:
        raise RuntimeError("an upload runs inside its request and cannot be run again")

    def failed(self, ctx: TaskContext, error: str) -> None:
        self.t.remove_upload(ctx.resource_id)


class DownloadHandler:
    kind = "volume.download"
    steps = ("stream",)
    resumable = False

    def __init__(self, transfers: VolumeTransfers) -> None:
        self.t = transfers

    def run(self, ctx: TaskContext) -> None:
        raise RuntimeError("a download runs inside its request and cannot be run again")

    def failed(self, ctx: TaskContext, error: str) -> None:
        self.t.release(ctx.resource_id)
