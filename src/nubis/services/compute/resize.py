"""Resize: an instance takes another flavor, on its host (Nova's resize, in place).

For the user it is two steps, as in Nova: ``resize`` gives the instance the new
flavor (more or fewer vCPUs and memory; a root disk as large or larger) and keeps
what it had in ``resize_from``; then ``confirm-resize`` forgets that, or
``revert-resize`` puts the old flavor back, and the old root disk when it grew: a
copy of it is kept until the resize is confirmed. A running instance is shut down
for the change and started again; a stopped one stays stopped.

The sizes are recorded, counted by the quotas and claimed on the host when the
resize (or its revert) is asked for, in one transaction; the task only makes the
host match. Every step is idempotent, so a task interrupted by a restart is run
again; a resize that fails leaves ``resize_from`` set, so revert-resize puts the
instance back as it was.
"""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.orm import Session

from nubis.db.models import Flavor, Instance, InstanceStatus, Task
from nubis.drivers.errors import DriverError
from nubis.drivers.libvirt.base import HostRef
from nubis.services.compute import root_volumes
from nubis.services.compute.instance_tasks import (
    GIB,
    InstanceTasks,
    Loaded,
    resize_backup_names,
    root_volume_name,
)
from nubis.services.compute.instances import InstanceService
from nubis.services.compute.snapshots import refuse_if_snapshotted
from nubis.services.core.errors import BadRequest, Conflict
from nubis.services.core.guard import claim
from nubis.services.core.lookup import get_by_id_or_name
from nubis.services.core.principal import Principal
from nubis.services.core.submit import submit_task
from nubis.services.identity import quotas
from nubis.services.scheduler import claims
from nubis.services.scheduler.state import load_host_states
from nubis.tasks.engine import TaskContext, TaskHandler

RESIZABLE = (InstanceStatus.RUNNING, InstanceStatus.STOPPED)
SIZES = ("vcpus", "memory_mib", "disk_gib")


def _change_sizes(
    session: Session, instance: Instance, flavor_id: str | None, sizes: dict[str, int]
) -> None:
    """Give the instance ``sizes``: counted by its project's quotas and claimed on its
    host (409 if either has no room), then recorded."""
    delta = {k: sizes[k] - getattr(instance, k) for k in SIZES}
    quotas.claim(
        session,
        instance.project_id,
        {"vcpus": delta["vcpus"], "memory_mib": delta["memory_mib"]},
    )
    host = load_host_states(session, host_ids=[instance.host_id or ""])
    if not host or not claims.change(
        session, host[0], delta["vcpus"], delta["memory_mib"], delta["disk_gib"]
    ):
        where = host[0].name if host else "its host"
        raise Conflict(
            f"host {where!r} has no room for instance {instance.name!r} at "
            f"{sizes['vcpus']} vCPUs, {sizes['memory_mib']} MiB, {sizes['disk_gib']} GiB"
        )
    instance.flavor_id = flavor_id
    for k in SIZES:
        setattr(instance, k, sizes[k])


def request_resize(
    instances: InstanceService, session: Session, principal: Principal, ref: str, flavor_ref: str
) -> Task:
    instance = instances.get(session, principal, ref)
    flavor = get_by_id_or_name(session, Flavor, flavor_ref, "flavor")
    root_volumes.refuse(session, instance, "a resize")
    if instance.resize_from is not None:
        raise Conflict(
            f"instance {instance.name!r} has a resize to confirm or revert first "
            "(confirm-resize, revert-resize)"
        )
    if flavor.id == instance.flavor_id:
        raise BadRequest(f"instance {instance.name!r} already has flavor {flavor.name!r}")
    if flavor.disk_gib < instance.disk_gib:
        raise BadRequest(
            f"flavor {flavor.name!r} has a {flavor.disk_gib} GiB root disk, smaller than "
            f"the instance's {instance.disk_gib} GiB: a disk cannot shrink"
        )
    refuse_if_snapshotted(session, instance, "which hold its old size: delete them before resizing")
    claim(session, instance, RESIZABLE, "resizing", "instance")
    was_running = instance.status == InstanceStatus.RUNNING
    before = {"flavor_id": instance.flavor_id, **{k: getattr(instance, k) for k in SIZES}}
    _change_sizes(session, instance, flavor.id, {k: getattr(flavor, k) for k in SIZES})
    instance.resize_from = before
    return submit_task(
        instances.engine,
        session,
        principal,
        "instance.resize",
        "instance",
        instance.id,
        {"was_running": was_running},
    )


def _pending(
    instances: InstanceService, session: Session, principal: Principal, ref: str
) -> Instance:
    instance = instances.get(session, principal, ref)
    if instance.resize_from is None:
        raise Conflict(f"instance {instance.name!r} has no resize to confirm or revert")
    return instance


def request_confirm(
    instances: InstanceService, session: Session, principal: Principal, ref: str
) -> Task:
    """Keep the new flavor: the old root disk's copy is removed."""
    instance = _pending(instances, session, principal, ref)
    claim(session, instance, RESIZABLE, "confirming", "instance")
    return submit_task(
        instances.engine, session, principal, "instance.confirm-resize", "instance", instance.id
    )


def request_revert(
    instances: InstanceService, session: Session, principal: Principal, ref: str
) -> Task:
    """Put the old flavor back (and the old root disk if the resize grew it)."""
    instance = _pending(instances, session, principal, ref)
    claim(session, instance, RESIZABLE + (InstanceStatus.ERROR,), "reverting-resize", "instance")
    was_running = instance.status == InstanceStatus.RUNNING
    old = dict(instance.resize_from)
    _change_sizes(session, instance, old.get("flavor_id"), {k: int(old[k]) for k in SIZES})
    return submit_task(
        instances.engine,
        session,
        principal,
        "instance.revert-resize",
        "instance",
        instance.id,
        {"was_running": was_running},
    )


def _power_off(t: InstanceTasks, ref: HostRef, instance_id: str) -> None:
    if not t.driver.shutdown(ref, instance_id, t.stop_timeout):
        t.driver.destroy(ref, instance_id)  # the guest ignored the power button


def _redefine_and_start(t: InstanceTasks, ctx: TaskContext, loaded: Loaded) -> str:
    """Define the domain at the instance's recorded sizes; start it if it was running.
    The status it ends in."""
    root = t.driver.volume_path(loaded.ref, root_volume_name(ctx.resource_id))
    if root is None:
        raise DriverError("the instance's root disk is missing")
    ctx.step("define", 70)
    t.ports.prepare(loaded.ref, ctx.resource_id)
    t.driver.redefine(loaded.ref, t.domain_spec(ctx.resource_id, root))
    if not ctx.params.get("was_running"):
        return InstanceStatus.STOPPED
    ctx.step("start", 85)
    t.driver.start(loaded.ref, ctx.resource_id)
    return InstanceStatus.RUNNING


def _forget(t: InstanceTasks, instance_id: str, status: str) -> None:
    """The resize is over: nothing to confirm or revert any more."""
    with t.db.begin() as s:
        s.execute(
            update(Instance)
            .where(Instance.id == instance_id)
            .values(resize_from=None, status=status, task_state=None, error=None)
        )


class _ResizeHandler:
    resumable = True  # every step looks at what is already done

    def __init__(self, tasks: InstanceTasks) -> None:
        self.t = tasks

    def failed(self, ctx: TaskContext, error: str) -> None:
        """Take the state libvirt reports; the resize stays pending, to be reverted."""
        self.t.reconcile(ctx.resource_id)
        with self.t.db.begin() as s:
            s.execute(
                update(Instance)
                .where(Instance.id == ctx.resource_id)
                .values(error=f"{ctx.kind} failed: {error}; revert-resize puts it back")
            )


class ResizeHandler(_ResizeHandler):
    kind = "instance.resize"
    steps = ("shutdown", "backup", "disk", "define", "start")

    def run(self, ctx: TaskContext) -> None:
        t = self.t
        loaded = t.load(ctx.resource_id)
        inst, ref = loaded.instance, loaded.ref
        old = inst.resize_from or {}
        ctx.step("shutdown", 10)
        _power_off(t, ref, inst.id)
        if inst.disk_gib > int(old.get("disk_gib", inst.disk_gib)):
            backup, marker = resize_backup_names(inst.id)
            if t.driver.volume_path(ref, marker) is None:
                ctx.step("backup", 25)
                t.copy_root(ref, backup, inst.id)
                t.driver.create_marker(ref, marker)
            ctx.step("disk", 50)
            t.driver.grow_disk(ref, root_volume_name(inst.id), inst.disk_gib * GIB)
        status = _redefine_and_start(t, ctx, loaded)
        t.settle(inst.id, status)


class RevertResizeHandler(_ResizeHandler):
    kind = "instance.revert-resize"
    steps = ("shutdown", "disk", "define", "start")

    def run(self, ctx: TaskContext) -> None:
        t = self.t
        loaded = t.load(ctx.resource_id)
        inst, ref = loaded.instance, loaded.ref
        if inst.resize_from is None:
            t.settle(inst.id, inst.status)  # a re-run after it was done
            return
        ctx.step("shutdown", 10)
        _power_off(t, ref, inst.id)
        backup, marker = resize_backup_names(inst.id)
        source = t.driver.volume_path(ref, backup)
        if source is not None and t.driver.volume_path(ref, marker) is not None:
            # the root disk as it was before the resize grew it; the copy is removed
            # only once the root disk is whole again, so a re-run copies it again
            ctx.step("disk", 40)
            t.driver.copy_disk(ref, root_volume_name(inst.id), source, "qcow2", 0)
            t.driver.delete_volume(ref, backup)
        t.driver.delete_volume(ref, marker)
        _forget(t, inst.id, _redefine_and_start(t, ctx, loaded))


class ConfirmResizeHandler(_ResizeHandler):
    kind = "instance.confirm-resize"
    steps = ("cleanup",)

    def run(self, ctx: TaskContext) -> None:
        loaded = self.t.load(ctx.resource_id)
        ctx.step("cleanup", 20)
        for name in resize_backup_names(ctx.resource_id):
            self.t.driver.delete_volume(loaded.ref, name)
        _forget(self.t, ctx.resource_id, loaded.instance.status)

    def failed(self, ctx: TaskContext, error: str) -> None:
        self.t.reconcile(ctx.resource_id)


def handlers(tasks: InstanceTasks) -> list[TaskHandler]:
    return [
        handler(tasks) for handler in (ResizeHandler, RevertResizeHandler, ConfirmResizeHandler)
    ]
