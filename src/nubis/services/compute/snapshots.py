"""Instance snapshots: every disk of the instance (libvirt internal qcow2 snapshots)
and, when it runs, its memory. Revert takes the instance back to that moment:
running from there if the memory was saved, stopped otherwise.

A snapshot operation holds the instance (``task_state``), so it never races a
power action, an attach or a migration. A revert is refused when the instance's
data volumes are not the ones the snapshot covered.
"""

from __future__ import annotations

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from nubis.db.models import (
    Host,
    Instance,
    InstanceStatus,
    Snapshot,
    SnapshotStatus,
    Task,
    Volume,
    VolumeAttachment,
)
from nubis.db.session import Database
from nubis.drivers.libvirt.base import HostRef
from nubis.drivers.libvirt.compute import LibvirtDriver
from nubis.drivers.libvirt.snapshots import SnapshotDriver
from nubis.services.compute import root_volumes
from nubis.services.compute.instances import InstanceService
from nubis.services.core.errors import BadRequest, Conflict
from nubis.services.core.guard import claim
from nubis.services.core.lookup import get_by_id_or_name, validate_name
from nubis.services.core.principal import Principal
from nubis.services.core.submit import submit_task
from nubis.services.identity import quotas
from nubis.services.inventory.hosts import HostService
from nubis.tasks.engine import TaskContext, TaskHandler

SNAPSHOTTABLE = (InstanceStatus.RUNNING, InstanceStatus.PAUSED, InstanceStatus.STOPPED)


def attached_volume_ids(session: Session, instance_id: str) -> list[str]:
    return sorted(
        session.scalars(
            select(VolumeAttachment.volume_id).where(VolumeAttachment.instance_id == instance_id)
        ).all()
    )


def refuse_if_snapshotted(session: Session, instance: Instance, why: str) -> None:
    """409 when the instance has snapshots: ``why`` says why they stand in the way."""
    count = session.scalar(select(func.count()).where(Snapshot.instance_id == instance.id))
    if count:
        raise Conflict(f"instance {instance.name!r} has {count} snapshot(s), {why}")


def forget_snapshots(session: Session, instance_id: str) -> None:
    """The instance is gone, and its snapshots (inside its disks) with it."""
    session.execute(delete(Snapshot).where(Snapshot.instance_id == instance_id))


class SnapshotService:
    def __init__(self, instances: InstanceService) -> None:
        self.instances = instances
        self.engine = instances.engine

    def find(
        self, session: Session, principal: Principal, instance_ref: str, ref: str
    ) -> tuple[Instance, Snapshot]:
        instance = self.instances.get(session, principal, instance_ref)
        snapshot = get_by_id_or_name(session, Snapshot, ref, "snapshot", instance_id=instance.id)
        return instance, snapshot

    def get(self, session: Session, principal: Principal, instance_ref: str, ref: str) -> Snapshot:
        return self.find(session, principal, instance_ref, ref)[1]

    def find_all(self, session: Session, principal: Principal, instance_ref: str) -> list[Snapshot]:
        instance = self.instances.get(session, principal, instance_ref)
        return list(
            session.scalars(
                select(Snapshot)
                .where(Snapshot.instance_id == instance.id)
                .order_by(Snapshot.created_at, Snapshot.id)
            ).all()
        )

    def create(
        self, session: Session, principal: Principal, instance_ref: str, name: str
    ) -> tuple[Snapshot, Task]:
        validate_name(name, "snapshot")
        instance = self.instances.get(session, principal, instance_ref)
        root_volumes.refuse(session, instance, "an instance snapshot")
        taken = session.scalar(
            select(Snapshot).where(Snapshot.instance_id == instance.id, Snapshot.name == name)
        )
        if taken is not None:
            raise Conflict(f"instance {instance.name!r} already has a snapshot named {name!r}")
        rows = session.execute(
            select(Volume.name, Volume.format, VolumeAttachment.mode)
            .join(VolumeAttachment, VolumeAttachment.volume_id == Volume.id)
            .where(VolumeAttachment.instance_id == instance.id)
        ).all()
        raw = [r.name for r in rows if r.format != "qcow2"]
        if raw:
            raise BadRequest(
                f"volume(s) {', '.join(raw)} are raw: snapshots live inside qcow2 disks; "
                "detach them first"
            )
        transient = [r.name for r in rows if r.mode == "nonpersistent"]
        if transient:
            raise BadRequest(
                f"volume(s) {', '.join(transient)} are nonpersistent: nothing of them is "
                "kept, so they cannot be snapshotted; detach them first"
            )
        if instance.resize_from is not None:
            raise Conflict(f"instance {instance.name!r} has a resize to confirm or revert first")
        claim(session, instance, SNAPSHOTTABLE, "snapshotting", "instance")
        quotas.claim(session, instance.project_id, {"snapshots": 1})
        snapshot = Snapshot(
            name=name,
            project_id=instance.project_id,
            instance_id=instance.id,
            volume_ids=attached_volume_ids(session, instance.id),
            status=SnapshotStatus.CREATING,
            task_state="creating",
        )
        session.add(snapshot)
        session.flush()
        return snapshot, submit_task(
            self.engine, session, principal, "snapshot.create", "snapshot", snapshot.id
        )

    def revert(
        self, session: Session, principal: Principal, instance_ref: str, ref: str
    ) -> tuple[Snapshot, Task]:
        instance, snapshot = self.find(session, principal, instance_ref, ref)
        if snapshot.status != SnapshotStatus.AVAILABLE or snapshot.task_state is not None:
            raise Conflict(
                f"snapshot {snapshot.name!r} is {snapshot.task_state or snapshot.status}"
            )
        if attached_volume_ids(session, instance.id) != sorted(snapshot.volume_ids or []):
            raise Conflict(
                f"instance {instance.name!r} has other volumes attached than when snapshot "
                f"{snapshot.name!r} was taken: attach or detach them to match first"
            )
        claim(session, instance, SNAPSHOTTABLE, "reverting", "instance")
        snapshot.task_state = "reverting"
        return snapshot, submit_task(
            self.engine, session, principal, "snapshot.revert", "snapshot", snapshot.id
        )

    def delete(
        self, session: Session, principal: Principal, instance_ref: str, ref: str
    ) -> tuple[Snapshot, Task]:
        instance, snapshot = self.find(session, principal, instance_ref, ref)
        if snapshot.task_state is not None:
            raise Conflict(f"snapshot {snapshot.name!r} is busy ({snapshot.task_state})")
        claim(
            session, instance, SNAPSHOTTABLE + (InstanceStatus.ERROR,), "unsnapshotting", "instance"
        )
        snapshot.task_state = "deleting"
        return snapshot, submit_task(
            self.engine, session, principal, "snapshot.delete", "snapshot", snapshot.id
        )


class _Handler:
    resumable = True  # every driver call is idempotent

    def __init__(
        self, db: Database, driver: SnapshotDriver, compute: LibvirtDriver, hosts: HostService
    ) -> None:
        self.db = db
        self.driver = driver
        self.compute = compute
        self.hosts = hosts

    def _load(self, snapshot_id: str) -> tuple[Snapshot, Instance, HostRef] | None:
        with self.db.begin() as s:
            snapshot = s.get(Snapshot, snapshot_id)
            if snapshot is None:
                return None
            instance = s.get(Instance, snapshot.instance_id)
            assert instance is not None
            host = s.get(Host, instance.host_id)
            assert host is not None
            return snapshot, instance, self.hosts.ref(host)

    def _release(self, snapshot_id: str, instance_id: str, **instance_values: object) -> None:
        with self.db.begin() as s:
            s.execute(update(Snapshot).where(Snapshot.id == snapshot_id).values(task_state=None))
            s.execute(
                update(Instance)
                .where(Instance.id == instance_id)
                .values(task_state=None, **instance_values)
            )


class CreateHandler(_Handler):
    kind = "snapshot.create"
    steps = ("snapshot",)

    def run(self, ctx: TaskContext) -> None:
        loaded = self._load(ctx.resource_id)
        if loaded is None:
            raise RuntimeError("the snapshot record is gone")
        snapshot, instance, ref = loaded
        ctx.step("snapshot", 20)
        memory = self.driver.create(ref, instance.id, snapshot.libvirt_name, snapshot.name)
        with self.db.begin() as s:
            s.execute(
                update(Snapshot)
                .where(Snapshot.id == snapshot.id)
                .values(status=SnapshotStatus.AVAILABLE, memory=memory)
            )
        self._release(snapshot.id, instance.id)

    def failed(self, ctx: TaskContext, error: str) -> None:
        loaded = self._load(ctx.resource_id)
        if loaded is None:
            return
        snapshot, instance, ref = loaded
        try:
            self.driver.delete(ref, instance.id, snapshot.libvirt_name)
        except Exception:  # noqa: BLE001 - best effort: the task's error says what failed
            pass
        with self.db.begin() as s:
            s.execute(delete(Snapshot).where(Snapshot.id == snapshot.id))
            s.execute(update(Instance).where(Instance.id == instance.id).values(task_state=None))


class RevertHandler(_Handler):
    kind = "snapshot.revert"
    steps = ("revert",)

    def run(self, ctx: TaskContext) -> None:
        loaded = self._load(ctx.resource_id)
        if loaded is None:
            raise RuntimeError("the snapshot record is gone")
        snapshot, instance, ref = loaded
        ctx.step("revert", 20)
        self.driver.revert(ref, instance.id, snapshot.libvirt_name)
        state = self.compute.state(ref, instance.id)
        self._release(snapshot.id, instance.id, status=state or InstanceStatus.ERROR, error=None)

    def failed(self, ctx: TaskContext, error: str) -> None:
        loaded = self._load(ctx.resource_id)
        if loaded is None:
            return
        snapshot, instance, ref = loaded
        try:
            state = self.compute.state(ref, instance.id)
        except Exception:  # noqa: BLE001
            state = None
        self._release(
            snapshot.id, instance.id, status=state or instance.status, error=f"revert: {error}"
        )


class DeleteHandler(_Handler):
    kind = "snapshot.delete"
    steps = ("delete",)

    def run(self, ctx: TaskContext) -> None:
        loaded = self._load(ctx.resource_id)
        if loaded is None:
            return  # a re-run after the record was removed
        snapshot, instance, ref = loaded
        ctx.step("delete", 20)
        self.driver.delete(ref, instance.id, snapshot.libvirt_name)
        with self.db.begin() as s:
            s.execute(delete(Snapshot).where(Snapshot.id == snapshot.id))
            s.execute(update(Instance).where(Instance.id == instance.id).values(task_state=None))

    def failed(self, ctx: TaskContext, error: str) -> None:
        loaded = self._load(ctx.resource_id)
        if loaded is None:
            return
        snapshot, instance, _ref = loaded
        with self.db.begin() as s:
            s.execute(
                update(Snapshot)
                .where(Snapshot.id == snapshot.id)
                .values(task_state=None, error=f"delete failed: {error}")
            )
            s.execute(update(Instance).where(Instance.id == instance.id).values(task_state=None))


def handlers(
    db: Database, driver: SnapshotDriver, compute: LibvirtDriver, hosts: HostService
) -> list[TaskHandler]:
    return [
        handler(db, driver, compute, hosts)
        for handler in (CreateHandler, RevertHandler, DeleteHandler)
    ]
