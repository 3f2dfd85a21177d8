"""Templates: an image made from a stopped instance's root disk, or from a volume.

The disk is flattened into a temporary volume beside it (qemu-img convert, through
libvirt), streamed into the image store's staging area, then registered as an
image like an upload. New instances can boot from it, as linked clones (the
default) or full copies. What the copy reads from is held (``templating``) until
the image is made: the instance cannot start, the volume cannot be attached to a
running instance, so the disk does not change mid-copy.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sqlalchemy.orm import Session

from nubis.db.models import (
    Image,
    ImageStatus,
    InstanceStatus,
    StoragePool,
    Task,
    Volume,
    VolumeStatus,
    new_id,
)
from nubis.db.session import Database
from nubis.drivers import rbd_images
from nubis.drivers.errors import DriverError
from nubis.drivers.libvirt.base import HostRef
from nubis.drivers.libvirt.volumes import VolumeDriver
from nubis.services.compute import root_volumes
from nubis.services.compute.instance_tasks import InstanceTasks
from nubis.services.compute.instances import InstanceService
from nubis.services.core.errors import Conflict
from nubis.services.core.guard import claim
from nubis.services.core.principal import Principal
from nubis.services.core.submit import submit_task
from nubis.services.inventory.hosts import HostService
from nubis.services.storage.images import CHUNK, ImageService, Staged
from nubis.services.storage.pools import one_host, spec_of
from nubis.services.storage.volumes import (
    VolumeService,
    files_only,
    release_hold,
    volume_path,
    volume_users,
)
from nubis.tasks.engine import TaskContext

Download = Callable[[Callable[[bytes], None], Callable[[int], None]], None]


def _params(
    images: ImageService, session: Session, name: str, principal: Principal
) -> dict[str, object]:
    """The task's parameters; the image is recorded at once (``creating``), so its id
    and name are taken and it can be watched until the task makes it active."""
    image_id = new_id()
    images.reserve(
        session, name, principal.project_id, image_id=image_id, status=ImageStatus.CREATING
    )
    return {"name": name, "image_id": image_id, "project_id": principal.project_id}


def request_template(
    instances: InstanceService,
    images: ImageService,
    session: Session,
    principal: Principal,
    ref: str,
    name: str,
) -> Task:
    images.check_name(session, name, principal.project_id)
    instance = instances.get(session, principal, ref)
    root_volumes.refuse(session, instance, "a template of the instance")
    claim(session, instance, (InstanceStatus.STOPPED,), "templating", "instance")
    params = _params(images, session, name, principal)
    return submit_task(
        instances.engine,
        session,
        principal,
        "instance.template",
        "instance",
        instance.id,
        params=params,
    )


def request_volume_template(
    volumes: VolumeService,
    images: ImageService,
    session: Session,
    principal: Principal,
    ref: str,
    name: str,
) -> Task:
    images.check_name(session, name, principal.project_id)
    volume = volumes.get(session, principal, ref)
    pool = session.get(StoragePool, volume.pool_id)
    assert pool is not None
    if pool.kind != "rbd":  # an RBD image is read by qemu-img through librbd
        files_only(pool, "a template")
    users = [i for _a, i in volume_users(session, volume.id)]
    running = [i.name for i in users if i.status != InstanceStatus.STOPPED]
    if running:
        raise Conflict(
            f"volume {volume.name!r} is attached to {', '.join(running)}, not stopped: stop "
            "or detach first (the disk must not change while it is copied)"
        )
    claim(session, volume, (VolumeStatus.AVAILABLE, VolumeStatus.IN_USE), "templating", "volume")
    for instance in users:
        claim(session, instance, (InstanceStatus.STOPPED,), "templating", "instance")
    params = _params(images, session, name, principal)
    return submit_task(
        volumes.engine, session, principal, "volume.template", "volume", volume.id, params
    )


class ImageExport:
    """The steps both kinds of template share: flatten into a temporary volume,
    stream it into the image store, register it. A re-run after a crash starts the
    copy afresh, unless the image was registered already."""

    def __init__(self, images: ImageService, db: Database) -> None:
        self.images = images
        self.db = db

    def staged(self, ctx: TaskContext) -> Staged:
        image_id = ctx.params["image_id"]
        return Staged(image_id, self.images.store / f"{image_id}.partial")

    @staticmethod
    def temp_name(ctx: TaskContext) -> str:
        return f"nubis-tmpl-{ctx.params['image_id']}"

    def run(
        self,
        ctx: TaskContext,
        flatten: Callable[[], None],
        download: Download,
        drop_temp: Callable[[], None],
    ) -> None:
        with self.db.begin() as s:
            image = s.get(Image, ctx.params["image_id"])
            if image is not None and image.status == ImageStatus.ACTIVE:
                return  # made before a crash interrupted the task's end
        ctx.step("flatten", 10)
        flatten()
        try:
            ctx.step("download", 40)
            staged = self.staged(ctx)
            with open(staged.path, "wb") as fh:

                def write(data: bytes) -> None:
                    staged.digest.update(data)
                    fh.write(data)

                download(write, lambda p: ctx.progress(40 + p // 2))
            ctx.step("register", 95)
            facts = self.images.inspect(staged, "qcow2")  # the flattened copy Nubis made
            with self.db.begin() as s:
                self.images.complete(s, ctx.params["name"], staged, facts, ctx.params["project_id"])
        finally:
            drop_temp()

    def discard(self, ctx: TaskContext, error: str) -> None:
        """The copy is dropped; the image recorded for it shows the failure."""
        self.staged(ctx).path.unlink(missing_ok=True)
        with self.db.begin() as s:
            self.images.give_up(s, ctx.params["image_id"], error)


class TemplateHandler:
    kind = "instance.template"
    steps = ("flatten", "download", "register")
    resumable = True

    def __init__(self, tasks: InstanceTasks) -> None:
        self.t = tasks
        self.export = ImageExport(tasks.images, tasks.db)

    def run(self, ctx: TaskContext) -> None:
        ref = self.t.load(ctx.resource_id).ref
        temp = self.export.temp_name(ctx)

        self.export.run(
            ctx,
            lambda: self.t.copy_root(ref, temp, ctx.resource_id),
            lambda write, progress: self.t.driver.download(ref, temp, write, progress),
            lambda: self.t.driver.delete_volume(ref, temp),
        )
        self.t.settle(ctx.resource_id, InstanceStatus.STOPPED)

    def failed(self, ctx: TaskContext, error: str) -> None:
        self.export.discard(ctx, error)
        try:
            self.t.driver.delete_volume(
                self.t.load(ctx.resource_id).ref, self.export.temp_name(ctx)
            )
        except (DriverError, LookupError):
            pass
        self.t.reconcile(ctx.resource_id)


class VolumeTemplateHandler:
    kind = "volume.template"
    steps = ("flatten", "download", "register")
    resumable = True

    def __init__(
        self, images: ImageService, db: Database, driver: VolumeDriver, hosts: HostService
    ) -> None:
        self.db = db
        self.driver = driver
        self.hosts = hosts
        self.export = ImageExport(images, db)

    def _where(self, volume_id: str) -> tuple[Volume, StoragePool, HostRef]:
        with self.db.begin() as s:
            volume = s.get(Volume, volume_id)
            if volume is None:
                raise LookupError("the volume was deleted")
            pool = s.get(StoragePool, volume.pool_id)
            assert pool is not None
            return volume, pool, one_host(s, pool, self.hosts)

    def run(self, ctx: TaskContext) -> None:
        volume, pool, ref = self._where(ctx.resource_id)
        temp = self.export.temp_name(ctx)
        if pool.kind == "rbd":
            self._run_rbd(ctx, volume, pool)
            return
        self.export.run(
            ctx,
            lambda: self.driver.copy_volume(
                ref, pool.libvirt_name, temp, volume_path(pool, volume), volume.format, "qcow2"
            ),
            lambda write, progress: self.driver.download(
                ref, pool.libvirt_name, temp, write, progress
            ),
            lambda: self._drop(ref, pool, volume, temp),
        )
        self._release(ctx.resource_id)

    def _run_rbd(self, ctx: TaskContext, volume: Volume, pool: StoragePool) -> None:
        """The RBD image converted by qemu-img (librbd) into a qcow2 file beside the
        image store's copy, which is filled from it (a ``.partial`` file: a crash
        leaves nothing once the store's start-up clean-up runs)."""
        spec = spec_of(pool, self.hosts.box)
        export = self._export_path(ctx)

        def read(write: Callable[[bytes], None], progress: Callable[[int], None]) -> None:
            total, done = max(export.stat().st_size, 1), 0
            with open(export, "rb") as fh:
                while chunk := fh.read(CHUNK):
                    write(chunk)
                    done += len(chunk)
                    progress(done * 100 // total)

        self.export.run(
            ctx,
            lambda: rbd_images.export_file(spec, volume.libvirt_name, export),
            read,
            lambda: export.unlink(missing_ok=True),
        )
        self._release(ctx.resource_id)

    def _export_path(self, ctx: TaskContext) -> Path:
        return self.export.images.store / f"{ctx.params['image_id']}.export.partial"

    def _drop(self, ref: HostRef, pool: StoragePool, volume: Volume, temp: str) -> None:
        if pool.kind == "rbd":
            return  # no temporary volume: a file the export removes
        if volume.secure_delete:  # the copy held the volume's data too
            self.driver.wipe_volume(ref, pool.libvirt_name, temp)
        self.driver.delete_volume(ref, pool.libvirt_name, temp)

    def _release(self, volume_id: str) -> None:
        with self.db.begin() as s:
            release_hold(s, volume_id, "templating")

    def failed(self, ctx: TaskContext, error: str) -> None:
        self.export.discard(ctx, error)
        self._export_path(ctx).unlink(missing_ok=True)
        try:
            volume, pool, ref = self._where(ctx.resource_id)
            self._drop(ref, pool, volume, self.export.temp_name(ctx))
        except (DriverError, LookupError):
            pass
        self._release(ctx.resource_id)
