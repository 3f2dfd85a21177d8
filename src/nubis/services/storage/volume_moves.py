"""Moving a volume to another storage pool (``POST /volumes/{ref}/actions/migrate``).

Attached to a running instance, the disk moves while the guest runs: the new volume
is made in the target pool, a block copy mirrors the disk into it, and the domain
pivots onto it (``VolumeDriver.copy_disk``). Otherwise the volume is copied with
libvirt (file pools only: libvirt cannot copy into or out of an RBD pool) and a
stopped instance's definition names the copy.

The volume and its instance are held (``task_state`` ``moving``) until the task
ends. The switch is one database update (pool, format, generation); the task's
params keep where the volume came from, so a task resumed after a crash finds the
old copy whichever side of the switch it stopped on. A failed move removes the new
copy and leaves the volume where it was.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from nubis.db.models import (
    Host,
    HostStatus,
    Instance,
    InstanceStatus,
    PoolState,
    Snapshot,
    StoragePool,
    Task,
    Volume,
    VolumeAttachment,
    VolumeSnapshot,
    VolumeStatus,
)
from nubis.db.models.storage import volume_file_name
from nubis.drivers.libvirt.base import HostRef
from nubis.drivers.libvirt.domain_xml import DiskSpec
from nubis.services.core.errors import BadRequest, Conflict, Unavailable
from nubis.services.core.guard import claim
from nubis.services.core.lookup import get_by_id_or_name
from nubis.services.core.principal import Principal
from nubis.services.core.submit import submit_task
from nubis.services.storage.pools import hosts_of, one_host, reaches
from nubis.services.storage.volume_tasks import VolumeTasks
from nubis.services.storage.volumes import (
    FILE_POOLS,
    GIB,
    VolumeService,
    disk_spec,
    network_disk,
    pool_file,
    release_hold,
)
from nubis.tasks.engine import TaskContext

log = logging.getLogger(__name__)
HOLD = "moving"
MIB = 1024**2
KIND = "volume.migrate"


def request_move(
    volumes: VolumeService,
    session: Session,
    principal: Principal,
    ref: str,
    pool_ref: str,
    bandwidth_mib_s: int | None = None,
) -> Task:
    """Check that the volume can move to the pool, hold it (and its instance), and
    queue the move; a clear 4xx and nothing changed otherwise (system administrators
    only: the route's policy)."""
    volume = volumes.get(session, principal, ref)
    target = get_by_id_or_name(session, StoragePool, pool_ref, "storage pool")
    source = session.get(StoragePool, volume.pool_id)
    assert source is not None
    if target.id == source.id:
        raise BadRequest(f"volume {volume.name!r} is already in storage pool {target.name!r}")
    if target.state != PoolState.ACTIVE:
        raise Conflict(f"storage pool {target.name!r} is {target.state}")
    if volume.lun is not None or "iscsi" in (source.kind, target.kind):
        raise BadRequest("LUNs are the SAN's: an iscsi volume does not move, none is made")
    if volume.size_gib * GIB > target.available_bytes:
        raise Conflict(
            f"storage pool {target.name!r} has {target.available_bytes // GIB} GiB free; "
            f"volume {volume.name!r} is {volume.size_gib} GiB"
        )
    if session.scalar(select(VolumeSnapshot.id).where(VolumeSnapshot.volume_id == volume.id)):
        raise Conflict(f"volume {volume.name!r} has snapshots: delete them before moving it")
    attachments = list(
        session.scalars(select(VolumeAttachment).where(VolumeAttachment.volume_id == volume.id))
    )
    if len(attachments) > 1:
        raise Conflict(f"volume {volume.name!r} is attached to several instances")
    live = False
    if attachments:
        if attachments[0].mode == "nonpersistent" or volume.shareable:
            raise Conflict(
                f"volume {volume.name!r} is attached as a shareable or nonpersistent disk: "
                "detach it to move it"
            )
        instance = session.get(Instance, attachments[0].instance_id)
        assert instance is not None
        _check_instance(session, volume, instance, target)
        live = instance.status == InstanceStatus.RUNNING
        claim(
            session,
            instance,
            (InstanceStatus.RUNNING, InstanceStatus.STOPPED),
            HOLD,
            "instance",
        )
    if not live and not {source.kind, target.kind} <= set(FILE_POOLS):
        raise BadRequest(
            f"a {source.kind} -> {target.kind} move copies the disk live: attach the volume "
            "to a running instance first (libvirt copies only between pools of files)"
        )
    if not live and not _shared_hosts(session, source, target):
        raise Conflict(
            f"no host reaches both storage pool {source.name!r} and {target.name!r}: the "
            "volume is copied through one"
        )
    claim(session, volume, (VolumeStatus.AVAILABLE, VolumeStatus.IN_USE), HOLD, "volume")
    params: dict[str, object] = {
        "pool_id": target.id,
        "from_pool_id": source.id,
        "from_format": volume.format,
        "from_generation": volume.generation,
        "bandwidth_mib_s": bandwidth_mib_s,
    }
    return submit_task(volumes.engine, session, principal, KIND, "volume", volume.id, params)


def _check_instance(
    session: Session, volume: Volume, instance: Instance, target: StoragePool
) -> None:
    host = session.get(Host, instance.host_id) if instance.host_id else None
    if host is None or not reaches(target, host):
        raise Conflict(
            f"volume {volume.name!r} is attached to {instance.name!r}, whose host cannot "
            f"reach storage pool {target.name!r}"
        )
    covering = [
        snap.name
        for snap in session.scalars(select(Snapshot).where(Snapshot.instance_id == instance.id))
        if volume.id in (snap.volume_ids or [])
    ]
    if covering:
        raise Conflict(
            f"snapshot(s) {', '.join(covering)} of {instance.name!r} include volume "
            f"{volume.name!r}: delete them before moving it"
        )


def _shared_hosts(session: Session, a: StoragePool, b: StoragePool) -> list[Host]:
    """The hosts that are up and reach both pools."""
    theirs = {h.id for h in hosts_of(session, b)}
    return [h for h in hosts_of(session, a) if h.id in theirs and h.state == HostStatus.UP]


@dataclass
class Move:
    """One move, as the task sees it: where from, where to, and the disk it plugs."""

    volume: Volume
    source: StoragePool
    target: StoragePool
    target_ref: HostRef  # a host of the target pool
    copy_ref: HostRef | None  # a host of both pools (None: none is up)
    old_name: str
    new_name: str
    new_format: str
    switched: bool  # the database already names the new copy
    instance: Instance | None
    instance_ref: HostRef | None
    old_disk: DiskSpec | None
    new_disk: DiskSpec | None


class MoveHandler:
    kind = KIND
    steps = ("allocate", "copy", "switch", "release")
    resumable = True
    cancellable = True  # until the switch: the copy stops, the new volume goes

    def __init__(self, tasks: VolumeTasks) -> None:
        self.t = tasks

    def load(self, ctx: TaskContext) -> Move:
        p = ctx.params
        with self.t.db.read() as s:
            volume = s.get(Volume, ctx.resource_id)
            if volume is None:
                raise LookupError(f"volume {ctx.resource_id} no longer exists")
            source = s.get(StoragePool, str(p["from_pool_id"]))
            target = s.get(StoragePool, str(p["pool_id"]))
            assert source is not None and target is not None
            switched = volume.pool_id == target.id
            old_gen = int(str(p["from_generation"]))
            old_name = volume_file_name(volume.id, str(p["from_format"]), old_gen)
            new_format = "raw" if target.kind not in FILE_POOLS else str(p["from_format"])
            new_name = volume_file_name(volume.id, new_format, old_gen + 1)
            attachment = s.scalar(
                select(VolumeAttachment).where(VolumeAttachment.volume_id == volume.id)
            )
            instance = s.get(Instance, attachment.instance_id) if attachment else None
            host = s.get(Host, instance.host_id) if instance and instance.host_id else None
            old_disk = new_disk = None
            if attachment is not None:
                spec = disk_spec(source, volume, attachment)
                old_disk = _on(spec, pool_file(source, old_name), str(p["from_format"]), source)
                new_disk = _on(spec, pool_file(target, new_name), new_format, target)
            shared = _shared_hosts(s, source, target)
            target_ref = one_host(s, target, self.t.hosts)
            s.expunge_all()
            return Move(
                volume,
                source,
                target,
                target_ref,
                self.t.hosts.ref(shared[0]) if shared else None,
                old_name,
                new_name,
                new_format,
                switched,
                instance,
                self.t.hosts.ref(host) if host is not None else None,
                old_disk,
                new_disk,
            )

    def run(self, ctx: TaskContext) -> None:
        move = self.load(ctx)
        if not move.switched:
            self._copy(ctx, move)
            ctx.step("switch", 90)  # the last point a cancel stops the move at
            ctx.may_cancel = False
            with self.t.db.begin() as s:
                volume = s.get(Volume, move.volume.id)
                assert volume is not None
                volume.pool_id, volume.format = move.target.id, move.new_format
                # a full copy: no RBD clone of a base or of a snapshot now
                volume.base_image_id = volume.base_snapshot_id = None
                volume.generation += 1
        ctx.may_cancel = False  # switched: the move is done, only the old copy goes
        ctx.step("release", 95)
        source_ref = one_host_ref(self.t, move.source)
        self._remove(source_ref, move.source, move.old_name, move.volume.secure_delete)
        self._end(move.volume.id, error=None)

    def _copy(self, ctx: TaskContext, move: Move) -> None:
        live = move.instance is not None and move.instance.status == InstanceStatus.RUNNING
        driver = self.t.driver
        if live:
            assert move.instance_ref and move.old_disk and move.new_disk and move.instance
            ctx.step("allocate", 5)
            driver.create_volume(
                move.target_ref,
                move.target.libvirt_name,
                move.new_name,
                move.volume.size_gib * GIB,
                move.new_format,
                "thin",
            )
            ctx.step("copy", 10)
            driver.copy_disk(
                move.instance_ref,
                move.instance.id,
                move.old_disk,
                move.new_disk,
                lambda done: ctx.progress(10 + done * 80 // 100),
                bandwidth=int(ctx.params.get("bandwidth_mib_s") or 0) * MIB,
            )
            return
        ctx.step("copy", 10)
        if move.copy_ref is None:
            raise Unavailable("no host that reaches both storage pools is up")
        driver.copy_volume(
            move.copy_ref,
            move.target.libvirt_name,
            move.new_name,
            pool_file(move.source, move.old_name),
            move.volume.format,
            move.new_format,
            move.volume.size_gib * GIB,
        )
        if move.instance is not None:  # stopped: its definition names the copy
            assert move.instance_ref and move.old_disk and move.new_disk
            driver.replace_disk(move.instance_ref, move.instance.id, move.old_disk, move.new_disk)

    def _remove(self, ref: HostRef, pool: StoragePool, name: str, wipe: bool) -> None:
        if wipe:
            self.t.driver.wipe_volume(ref, pool.libvirt_name, name)
        self.t.driver.delete_volume(ref, pool.libvirt_name, name)

    def _end(self, volume_id: str, error: str | None) -> None:
        with self.t.db.begin() as s:
            volume = s.get(Volume, volume_id)
            if volume is not None:
                volume.error = error
            release_hold(s, volume_id, HOLD)

    def failed(self, ctx: TaskContext, error: str) -> None:
        try:
            move = self.load(ctx)
        except LookupError:
            return
        if not move.switched:  # the guest stays on its disk; the new copy goes
            try:
                if move.instance is not None and move.instance_ref is not None:
                    assert move.old_disk is not None
                    self.t.driver.abort_copy(
                        move.instance_ref, move.instance.id, move.old_disk.target
                    )
                self._remove(move.target_ref, move.target, move.new_name, False)
            except Exception:  # logged; the volume is where it was either way
                log.exception("could not remove the partial copy of volume %s", move.volume.id)
        else:
            log.warning("volume %s moved; its old copy %s stays", move.volume.id, move.old_name)
        self._end(move.volume.id, error=f"move failed: {error}")


def one_host_ref(tasks: VolumeTasks, pool: StoragePool) -> HostRef:
    with tasks.db.read() as s:
        return one_host(s, pool, tasks.hosts)


def _on(spec: DiskSpec, path: str, fmt: str, pool: StoragePool) -> DiskSpec:
    """``spec`` (an attachment's disk) on another volume."""
    return dataclasses.replace(spec, path=path, format=fmt, network=network_disk(pool))
