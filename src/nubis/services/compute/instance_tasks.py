"""Task handlers for instances: the steps of create, delete and the power actions.

Every libvirt object an instance owns has a name derived from its id (domain
``nubis-<id>``, volume ``nubis-<id>-root``, console log ``nubis-<id>.log``).
So every step is idempotent and the undo of a failed or interrupted create is
"remove whatever of those exists": it works even after the process that did
the work died, which an in-memory undo list could not.
"""

from __future__ import annotations

import logging
import secrets
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from sqlalchemy import update

from nubis.db.models import AttachmentStatus, Host, Image, Instance, InstanceStatus, Port
from nubis.drivers.errors import DriverError
from nubis.drivers.libvirt.compute import HostRef, LibvirtDriver
from nubis.drivers.libvirt.console import VNC_PASSWORD_LENGTH, console_address
from nubis.drivers.libvirt.domain_xml import DiskSpec, DomainSpec
from nubis.keyed_locks import KeyedLocks
from nubis.services.compute import root_volumes
from nubis.services.compute.cloudinit import build_seed
from nubis.services.compute.snapshots import forget_snapshots
from nubis.services.inventory.hosts import HostService
from nubis.services.network.ports import (
    PortOnHosts,
    PortPlumbing,
    cluster_refs,
    instance_ports,
    interfaces,
)
from nubis.services.scheduler import claims
from nubis.services.storage.images import ImageService, image_volume_name
from nubis.services.storage.volume_tasks import VolumeTasks
from nubis.services.storage.volumes import ROOT_TARGET, attached_disks, release_attachments
from nubis.tasks.engine import TaskContext, TaskEngine, TaskHandler

log = logging.getLogger(__name__)
GIB = 1024**3
# every instance has an IDE CD-ROM drive (empty unless a disc is inserted): IDE drives
# cannot be hot-plugged, so the drive is there from the start for discs to come live
CDROM_TARGET = "hdc"
# the second CD-ROM drive holds cloud-init's seed disc (see services/cloudinit.py)
SEED_TARGET = "hdd"
# boot devices a user names, and the domain's devices they are
BOOT_DEVICES = {"disk": ROOT_TARGET, "cdrom": CDROM_TARGET}


def boot_targets(boot_order: str) -> list[str]:
    """The domain devices of a stored boot order ("cdrom,disk" -> [hdc, vda])."""
    return [BOOT_DEVICES[d] for d in boot_order.split(",") if d in BOOT_DEVICES]


def root_volume_name(instance_id: str) -> str:
    return f"nubis-{instance_id}-root"


def seed_volume_name(instance_id: str) -> str:
    return f"nubis-{instance_id}-seed.iso"


def resize_backup_names(instance_id: str) -> tuple[str, str]:
    """The copy of the root disk a resize that grew it keeps for a revert, and the
    marker saying it was copied completely (services/resize.py)."""
    backup = root_volume_name(instance_id) + ".pre-resize"
    return backup, backup + ".full"


def volume_names(instance_id: str) -> tuple[str, ...]:
    """Every volume of the host's disk pool that belongs to an instance (root disk,
    seed disc, a resize's backup, and the markers saying each was written completely)."""
    root, seed = root_volume_name(instance_id), seed_volume_name(instance_id)
    return (root, root + ".full", seed, seed + ".ready", *resize_backup_names(instance_id))


@dataclass
class Loaded:
    instance: Instance
    host: Host
    ref: HostRef


class InstanceTasks:
    """Shared plumbing of the instance handlers."""

    def __init__(
        self,
        engine: TaskEngine,
        driver: LibvirtDriver,
        hosts: HostService,
        images: ImageService,
        ports: PortPlumbing,
        stop_timeout: float,
        volumes: VolumeTasks,
    ) -> None:
        self.db = engine.db
        self.driver = driver
        self.hosts = hosts
        self.images = images
        self.ports = ports
        self.stop_timeout = stop_timeout
        self.volumes = volumes  # root disks on a pool are volumes (root_volumes.py)
        self._copy_locks = KeyedLocks()  # one per image

    def handlers(self) -> list[TaskHandler]:
        return [
            CreateHandler(self),
            DeleteHandler(self),
            StartHandler(self),
            StopHandler(self),
            ForceStopHandler(self),
            RebootHandler(self),
            PauseHandler(self),
            SuspendHandler(self),
            ResumeHandler(self),
        ]

    def load(self, instance_id: str) -> Loaded:
        with self.db.begin() as s:
            instance = s.get(Instance, instance_id)
            if instance is None:
                raise LookupError(f"instance {instance_id} no longer exists")
            host = s.get(Host, instance.host_id)
            assert host is not None
            return Loaded(instance, host, self.hosts.ref(host))

    def settle(self, instance_id: str, status: str, error: str | None = None) -> None:
        """End the operation in flight: the instance takes ``status``, task_state clears."""
        with self.db.begin() as s:
            s.execute(
                update(Instance)
                .where(Instance.id == instance_id)
                .values(status=status, task_state=None, error=error)
            )

    def reconcile(self, instance_id: str) -> None:
        """After a failed action: take the state libvirt reports as the truth."""
        try:
            loaded = self.load(instance_id)
        except LookupError:
            return
        try:
            state = self.driver.state(loaded.ref, instance_id)
        except DriverError as exc:
            self.settle(instance_id, loaded.instance.status, f"host unreachable: {exc}")
            return
        if state is None:
            self.settle(instance_id, InstanceStatus.ERROR, "the domain is missing on its host")
        else:
            self.settle(instance_id, state)

    def ensure_image_copy(self, ref: HostRef, image: Image) -> str:
        """The path of the image's copy on the host, copied once per host and reused.

        A ``.ready`` marker volume is written after the copy completes, so a copy
        that an interrupted upload left half-written is never used.
        """
        name = image_volume_name(image)
        # one copy of an image at a time, whatever the host: hosts of a cluster share
        # the pool's directory, and two uploads into one file would corrupt it
        with self._copy_locks(image.id):
            path = self.driver.volume_path(ref, name)
            if path is not None and self.driver.volume_path(ref, name + ".ready") is not None:
                return path
            path = self.driver.upload_volume(ref, name, self.images.path(image))
            self.driver.create_marker(ref, name + ".ready")
            return path

    def root_backing(self, ref: HostRef, instance_id: str) -> tuple[str, str] | None:
        """The one backing file (path, format) the instance's root disk may name: the
        copy of the image it is a linked clone of; None: it may name none."""
        with self.db.begin() as s:
            inst = s.get(Instance, instance_id)
            image = s.get(Image, inst.image_id) if inst is not None and inst.image_id else None
        if inst is None or image is None or inst.clone_mode != "linked":
            return None
        if image.disk_format == "iso":  # a blank disk, installed from the disc
            return None
        path = self.driver.volume_path(ref, image_volume_name(image))
        return None if path is None else (path, image.disk_format or "qcow2")

    def root_on(self, ref: HostRef, instance_id: str) -> str | None:
        """Where the instance's root disk is for a definition on the host: its file's
        path, "" when it is a volume of a pool (the definition opens the volume),
        None when the host has neither."""
        with self.db.read() as s:
            if root_volumes.find(s, instance_id) is not None:
                return ""
        return self.driver.volume_path(ref, root_volume_name(instance_id))

    def copy_root(self, ref: HostRef, name: str, instance_id: str, capacity: int = 0) -> str:
        """A flattened qcow2 copy of the instance's root disk as volume ``name``."""
        root = self.driver.volume_path(ref, root_volume_name(instance_id))
        if root is None:
            raise LookupError("the instance's root disk is missing")
        backing = self.root_backing(ref, instance_id)
        return self.driver.copy_disk(ref, name, root, "qcow2", capacity, backing)

    def domain_spec(self, instance_id: str, root: str) -> DomainSpec:
        """The domain of an instance on its (current) host, its root disk at ``root``,
        the disc of its CD-ROM drive copied there, its devices in its boot order."""
        loaded = self.load(instance_id)
        inst, host = loaded.instance, loaded.host
        disc = ""
        if inst.cdrom_image_id is not None:
            with self.db.begin() as s:
                image = s.get(Image, inst.cdrom_image_id)
                if image is None:
                    raise LookupError("the ISO image in the CD-ROM drive was deleted")
            disc = self.ensure_image_copy(loaded.ref, image)
        order = boot_targets(inst.boot_order)

        def boot(target: str) -> int | None:
            return order.index(target) + 1 if target in order else None

        with self.db.begin() as s:
            attached = attached_disks(s, instance_id)
            nics = interfaces(s, instance_id)
        # a root disk on a pool is the volume attached as vda, booted as the root disk
        pooled = [
            replace(d, boot_order=boot(ROOT_TARGET)) for d in attached if d.target == ROOT_TARGET
        ]
        attached = [d for d in attached if d.target != ROOT_TARGET]
        root_disk = DiskSpec(
            path=root, format="qcow2", target=ROOT_TARGET, boot_order=boot(ROOT_TARGET)
        )
        disks: tuple[DiskSpec, ...] = (
            pooled[0] if pooled else root_disk,
            DiskSpec(
                path=disc,
                format="raw",
                target=CDROM_TARGET,
                bus="ide",
                device="cdrom",
                boot_order=boot(CDROM_TARGET),
                readonly=True,
            ),
        )
        if inst.seed_format is not None:
            disks += (
                DiskSpec(
                    path=self.ensure_seed(loaded.ref, instance_id),
                    format="raw",
                    target=SEED_TARGET,
                    bus="ide",
                    device="cdrom",
                    readonly=True,
                ),
            )
        disks += tuple(attached)
        return DomainSpec(
            name=inst.domain_name,
            uuid=inst.id,
            vcpus=inst.vcpus,
            memory_mib=inst.memory_mib,
            virt_type=host.effective_virt_type,
            arch=host.arch,
            title=inst.name,
            disks=disks,
            interfaces=nics,
            console_log=self.driver.console_log_path(inst.domain_name),
            # VNC on the host's management address, with a password nobody is told:
            # a console ticket sets a one-time one (services/console.py)
            vnc_listen=console_address(host.uri),
            vnc_password=secrets.token_urlsafe(6)[:VNC_PASSWORD_LENGTH],
            metadata={"instance": inst.id, "project": inst.project_id, "name": inst.name},
        )

    def ensure_seed(self, ref: HostRef, instance_id: str) -> str:
        """The path of the instance's seed disc on the host, made the first time (and
        again only when an interrupted run left it without its ``.ready`` marker)."""
        name = seed_volume_name(instance_id)
        path = self.driver.volume_path(ref, name)
        if path is not None and self.driver.volume_path(ref, name + ".ready") is not None:
            return path
        with self.db.begin() as s:
            instance = s.get(Instance, instance_id)
            if instance is None:
                raise LookupError(f"instance {instance_id} no longer exists")
            data = build_seed(s, instance)
        with tempfile.TemporaryDirectory(prefix="nubis-seed-") as tmp:
            iso = Path(tmp) / "seed.iso"
            iso.write_bytes(data)
            path = self.driver.upload_volume(ref, name, iso)
        self.driver.create_marker(ref, name + ".ready")
        return path

    def delete_volumes(self, ref: HostRef, instance_id: str) -> None:
        for name in volume_names(instance_id):
            self.driver.delete_volume(ref, name)

    def remove_everything(self, ref: HostRef, instance_id: str) -> None:
        """Remove the domain, disks and console log of an instance (idempotent)."""
        self.driver.undefine(ref, instance_id)
        self.delete_volumes(ref, instance_id)
        self.driver.delete_console_log(ref, f"nubis-{instance_id}")


class _Handler:
    kind = ""
    steps: tuple[str, ...] = ()
    resumable = True

    def __init__(self, tasks: InstanceTasks) -> None:
        self.t = tasks

    def failed(self, ctx: TaskContext, error: str) -> None:
        self.t.reconcile(ctx.resource_id)


class CreateHandler(_Handler):
    kind = "instance.create"
    steps = ("image", "disk", "define", "start")

    def run(self, ctx: TaskContext) -> None:
        t = self.t
        loaded = t.load(ctx.resource_id)
        inst, ref = loaded.instance, loaded.ref
        source_id = ctx.params.get("source_instance_id")
        if source_id:  # a full clone of a stopped instance
            ctx.step("disk", 40)
            root = self._full_copy(
                ref,
                inst.id,
                lambda name: t.copy_root(ref, name, source_id, inst.disk_gib * GIB),
            )
            self._release_source(source_id)
        else:
            root = self._root_from_image(ctx, ref, inst)
        ctx.step("define", 60)
        t.ports.prepare(ref, inst.id)
        spec = t.domain_spec(inst.id, root)
        t.driver.define(ref, spec)
        ctx.step("start", 80)
        t.driver.start(ref, inst.id)
        with t.db.begin() as s:
            s.execute(
                update(Port)
                .where(Port.instance_id == inst.id)
                .values(status=AttachmentStatus.ATTACHED)
            )
        t.settle(inst.id, InstanceStatus.RUNNING)

    def _root_from_image(self, ctx: TaskContext, ref: HostRef, inst: Instance) -> str:
        t = self.t
        with t.db.begin() as s:
            image = s.get(Image, inst.image_id)
            if image is None:
                raise LookupError("the image was deleted")
            pooled = root_volumes.find(s, inst.id)
            pooled_id = pooled.id if pooled is not None else None
        if pooled_id is not None:  # a volume of a pool, made from the image
            ctx.step("disk", 40)
            t.volumes.make_root(pooled_id, image.id)
            return ""
        ctx.step("image", 10)
        base = t.ensure_image_copy(ref, image)
        ctx.step("disk", 40)
        capacity = max(inst.disk_gib * GIB, image.virtual_size or 0)
        if image.disk_format == "iso":  # installer ISO: a blank root disk
            return t.driver.create_disk(ref, root_volume_name(inst.id), inst.disk_gib * GIB)
        if inst.clone_mode == "full":
            fmt = image.disk_format or "qcow2"
            return self._full_copy(
                ref, inst.id, lambda name: t.driver.copy_disk(ref, name, base, fmt, capacity)
            )
        # a linked clone of the image
        return t.driver.create_disk(
            ref, root_volume_name(inst.id), capacity, (base, image.disk_format or "qcow2")
        )

    def _full_copy(self, ref: HostRef, instance_id: str, copy: Callable[[str], str]) -> str:
        """An independent copy (``copy(name)``) as the root disk, marked when complete so
        a copy an interrupted run left half-written is made again, never used."""
        t, name = self.t, root_volume_name(instance_id)
        root = t.driver.volume_path(ref, name)
        if root is None or t.driver.volume_path(ref, name + ".full") is None:
            root = copy(name)
            t.driver.create_marker(ref, name + ".full")
        return root

    def _release_source(self, source_id: str) -> None:
        with self.t.db.begin() as s:
            s.execute(
                update(Instance)
                .where(Instance.id == source_id, Instance.task_state == "cloning")
                .values(task_state=None)
            )

    def failed(self, ctx: TaskContext, error: str) -> None:
        t = self.t
        if ctx.params.get("source_instance_id"):
            self._release_source(ctx.params["source_instance_id"])
        try:
            loaded = t.load(ctx.resource_id)
        except LookupError:
            return
        try:
            t.remove_everything(loaded.ref, ctx.resource_id)
        except DriverError as exc:
            error = f"{error}; clean-up on the host failed too: {exc}"
        t.settle(ctx.resource_id, InstanceStatus.ERROR, f"create failed: {error}")


class DeleteHandler(_Handler):
    kind = "instance.delete"
    steps = ("destroy", "undefine", "disk", "console")

    def run(self, ctx: TaskContext) -> None:
        t = self.t
        try:
            loaded = t.load(ctx.resource_id)
        except LookupError:
            return  # already gone: a re-run after the row was removed
        ctx.step("destroy", 20)
        t.driver.destroy(loaded.ref, ctx.resource_id)
        ctx.step("undefine", 40)
        t.driver.undefine(loaded.ref, ctx.resource_id)
        ctx.step("disk", 60)
        t.delete_volumes(loaded.ref, ctx.resource_id)
        with t.db.read() as s:
            pooled = root_volumes.find(s, ctx.resource_id)
            pooled_id = pooled.id if pooled is not None else None
        if pooled_id is not None:  # its root volume goes with it
            t.volumes.remove_data(pooled_id)
        ctx.step("console", 80)
        t.driver.delete_console_log(loaded.ref, loaded.instance.domain_name)
        with t.db.read() as s:
            instance = s.get(Instance, ctx.resource_id)
            if instance is None:
                return
            refs = cluster_refs(s, instance, t.hosts)
            gone = [PortOnHosts.of(s, port) for port in instance_ports(s, instance.id)]
        t.ports.unplug(refs, gone)
        left_groups: set[str] = set()
        with t.db.begin() as s:
            instance = s.get(Instance, ctx.resource_id)
            if instance is not None:
                if instance.host_id is not None:
                    claims.release(
                        s,
                        instance.host_id,
                        instance.vcpus,
                        instance.memory_mib,
                        instance.disk_gib,
                    )
                pooled = root_volumes.find(s, instance.id)
                release_attachments(s, instance.id)
                if pooled is not None:
                    s.delete(pooled)
                forget_snapshots(s, instance.id)
                for port in instance_ports(s, instance.id):
                    left_groups |= t.ports.forget(s, port)
                    s.flush()
                    s.delete(port)
                s.flush()
                s.delete(instance)
        # the rules naming the groups it was in forget its addresses
        t.ports.groups.push(left_groups, strict=False)
        t.ports.left([port.network_id for port in gone])

    def failed(self, ctx: TaskContext, error: str) -> None:
        self.t.settle(ctx.resource_id, InstanceStatus.ERROR, f"delete failed: {error}")


class StartHandler(_Handler):
    kind = "instance.start"
    steps = ("start",)

    def run(self, ctx: TaskContext) -> None:
        loaded = self.t.load(ctx.resource_id)
        ctx.step("start", 20)
        self.t.ports.prepare(loaded.ref, ctx.resource_id)  # after a host reboot, say
        self.t.driver.start(loaded.ref, ctx.resource_id)
        self.t.settle(ctx.resource_id, InstanceStatus.RUNNING)


class StopHandler(_Handler):
    kind = "instance.stop"
    steps = ("shutdown", "destroy")

    def run(self, ctx: TaskContext) -> None:
        loaded = self.t.load(ctx.resource_id)
        ctx.step("shutdown", 10)
        if not self.t.driver.shutdown(loaded.ref, ctx.resource_id, self.t.stop_timeout):
            log.info("instance %s ignored ACPI shutdown; forcing it off", ctx.resource_id)
            ctx.step("destroy", 80)
            self.t.driver.destroy(loaded.ref, ctx.resource_id)
        self.t.driver.discard_saved(loaded.ref, ctx.resource_id)  # a suspended one's memory
        self.t.settle(ctx.resource_id, InstanceStatus.STOPPED)


class ForceStopHandler(_Handler):
    kind = "instance.force-stop"
    steps = ("destroy",)

    def run(self, ctx: TaskContext) -> None:
        loaded = self.t.load(ctx.resource_id)
        ctx.step("destroy", 20)
        self.t.driver.destroy(loaded.ref, ctx.resource_id)
        self.t.driver.discard_saved(loaded.ref, ctx.resource_id)  # a suspended one's memory
        self.t.settle(ctx.resource_id, InstanceStatus.STOPPED)


class RebootHandler(_Handler):
    kind = "instance.reboot"
    steps = ("reboot",)
    resumable = False  # rebooting twice is not what the user asked for

    def run(self, ctx: TaskContext) -> None:
        loaded = self.t.load(ctx.resource_id)
        ctx.step("reboot", 20)
        # soft: through the guest (ACPI); hard: a reset, whatever the guest does
        self.t.driver.reboot(loaded.ref, ctx.resource_id, hard=bool(ctx.params.get("hard")))
        self.t.settle(ctx.resource_id, InstanceStatus.RUNNING)


class PauseHandler(_Handler):
    kind = "instance.pause"
    steps = ("pause",)

    def run(self, ctx: TaskContext) -> None:
        loaded = self.t.load(ctx.resource_id)
        ctx.step("pause", 20)
        if self.t.driver.state(loaded.ref, ctx.resource_id) != InstanceStatus.PAUSED:
            self.t.driver.pause(loaded.ref, ctx.resource_id)
        self.t.settle(ctx.resource_id, InstanceStatus.PAUSED)


class SuspendHandler(_Handler):
    kind = "instance.suspend"
    steps = ("save",)

    def run(self, ctx: TaskContext) -> None:
        loaded = self.t.load(ctx.resource_id)
        ctx.step("save", 20)
        self.t.driver.save(loaded.ref, ctx.resource_id)  # nothing to do once saved
        self.t.settle(ctx.resource_id, InstanceStatus.SUSPENDED)


class ResumeHandler(_Handler):
    """From paused (the guest's CPUs go on) or suspended (its saved memory is restored)."""

    kind = "instance.resume"
    steps = ("resume",)

    def run(self, ctx: TaskContext) -> None:
        loaded = self.t.load(ctx.resource_id)
        ctx.step("resume", 20)
        state = self.t.driver.state(loaded.ref, ctx.resource_id)
        if state == InstanceStatus.PAUSED:
            self.t.driver.resume(loaded.ref, ctx.resource_id)
        elif state == InstanceStatus.SUSPENDED:
            self.t.ports.prepare(loaded.ref, ctx.resource_id)  # after a host reboot, say
            self.t.driver.start(loaded.ref, ctx.resource_id)
        elif state != InstanceStatus.RUNNING:
            raise RuntimeError(f"its domain is {state or 'missing'}: there is nothing to resume")
        self.t.settle(ctx.resource_id, InstanceStatus.RUNNING)
