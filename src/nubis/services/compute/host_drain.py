"""Host operations that move instances: maintenance (drain) and evacuation.

Maintenance: the host takes no new placement at once (``entering``); its
instances are migrated away, at most ``maintenance_parallel`` at a time (live
when running or paused, cold when stopped); when it is empty it is
``active``. Evacuation restarts the instances of a host that is down, on other
hosts of its cluster, and only when an operator confirms that the host is
really down (fencing comes with high availability).
"""

from __future__ import annotations

import logging
import time

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from nubis.db.models import (
    Host,
    HostStatus,
    Instance,
    InstanceStatus,
    Snapshot,
    SnapshotStatus,
    StaleDomain,
    Task,
    TaskStatus,
)
from nubis.drivers.errors import DriverError
from nubis.services.compute.instance_tasks import InstanceTasks
from nubis.services.compute.instances import InstanceService
from nubis.services.compute.migration import request_migration
from nubis.services.core.errors import BadRequest, Conflict, ServiceError
from nubis.services.core.guard import claim
from nubis.services.core.lookup import get_by_id_or_name
from nubis.services.scheduler import claims
from nubis.services.storage.volumes import unreachable_volumes
from nubis.tasks.engine import TaskContext

log = logging.getLogger(__name__)
FINISHED = (TaskStatus.SUCCEEDED, TaskStatus.FAILED)


def _host_task_running(session: Session, host_id: str) -> bool:
    return (
        session.scalar(
            select(Task.id).where(
                Task.resource_id == host_id,
                Task.status.in_((TaskStatus.QUEUED, TaskStatus.RUNNING)),
            )
        )
        is not None
    )


def enter_maintenance(instances: InstanceService, session: Session, ref: str) -> Task:
    host = get_by_id_or_name(session, Host, ref, "host")
    if _host_task_running(session, host.id):
        raise Conflict(f"host {host.name!r} already has an operation in progress")
    if host.maintenance == "active":
        raise Conflict(f"host {host.name!r} is already in maintenance")
    host.maintenance = "entering"  # from now on the scheduler skips it
    return instances.engine.submit(session, "host.maintenance", "host", host.id)


def exit_maintenance(session: Session, ref: str) -> Host:
    host = get_by_id_or_name(session, Host, ref, "host")
    if host.maintenance == "none":
        raise Conflict(f"host {host.name!r} is not in maintenance")
    if _host_task_running(session, host.id):
        raise Conflict(f"host {host.name!r} is still being drained; wait for it to end")
    host.maintenance = "none"
    return host


def evacuate(
    instances: InstanceService, session: Session, ref: str, confirm_host_down: bool
) -> Task:
    host = get_by_id_or_name(session, Host, ref, "host")
    if host.state != HostStatus.DOWN:
        raise Conflict(
            f"host {host.name!r} is {host.state}: only a host that is down can be evacuated "
            "(put a live host into maintenance instead)"
        )
    if not confirm_host_down:
        raise BadRequest(
            "evacuation restarts this host's instances elsewhere: confirm that the host is "
            "really down (powered off, fenced) with confirm_host_down=true, or a VM could "
            "run twice"
        )
    if _host_task_running(session, host.id):
        raise Conflict(f"host {host.name!r} already has an operation in progress")
    return instances.engine.submit(session, "host.evacuate", "host", host.id)


class _HostHandler:
    resumable = True  # both handlers look at what is left on the host each time

    def __init__(
        self,
        tasks: InstanceTasks,
        instances: InstanceService,
        parallel: int,
        max_downtime_ms: int,
        max_bandwidth_mib_s: int | None = None,
    ) -> None:
        self.t = tasks
        self.instances = instances
        self.parallel = max(1, parallel)
        self.max_downtime_ms = max_downtime_ms
        self.max_bandwidth_mib_s = max_bandwidth_mib_s

    def remaining(self, host_id: str) -> list[str]:
        with self.t.db.begin() as s:
            return list(s.scalars(select(Instance.id).where(Instance.host_id == host_id)))


class MaintenanceHandler(_HostHandler):
    kind = "host.maintenance"
    steps = ("drain",)

    def run(self, ctx: TaskContext) -> None:
        host_id = ctx.resource_id
        total = len(self.remaining(host_id)) or 1
        errors: dict[str, str] = {}
        while True:
            left = [i for i in self.remaining(host_id) if i not in errors]
            if not left:
                break
            batch = left[: self.parallel]
            ctx.step("drain", int(100 * (total - len(left)) / total))
            waiting = {iid: self._start(iid, errors) for iid in batch}
            for iid, task_id in waiting.items():
                if task_id is not None:
                    status, error = self._wait(task_id)
                    if status != TaskStatus.SUCCEEDED:
                        errors[iid] = error or status
            ctx.progress(int(100 * (total - len(self.remaining(host_id))) / total))
        if errors:
            raise RuntimeError(
                "could not move every instance off the host: "
                + "; ".join(f"{iid}: {why}" for iid, why in errors.items())
            )
        with self.t.db.begin() as s:
            s.execute(update(Host).where(Host.id == host_id).values(maintenance="active"))

    def _start(self, instance_id: str, errors: dict[str, str]) -> str | None:
        try:
            with self.t.db.begin() as s:
                instance = s.get(Instance, instance_id)
                if instance is None:
                    return None
                task = request_migration(
                    self.instances,
                    s,
                    None,
                    instance,
                    None,
                    self.max_downtime_ms,
                    self.max_bandwidth_mib_s,
                )
                return task.id
        except ServiceError as exc:
            errors[instance_id] = exc.message
            return None

    def _wait(self, task_id: str, timeout: float = 1800) -> tuple[str, str | None]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.t.db.begin() as s:
                task = s.get(Task, task_id)
                if task is None or task.status in FINISHED:
                    return (
                        (task.status, task.error) if task else (TaskStatus.FAILED, "task vanished")
                    )
            time.sleep(0.5)
        return TaskStatus.FAILED, "timed out"

    def failed(self, ctx: TaskContext, error: str) -> None:
        """The host stays out of placement (``entering``); the task says what is left."""


class EvacuateHandler(_HostHandler):
    kind = "host.evacuate"
    steps = ("restart",)

    def run(self, ctx: TaskContext) -> None:
        errors = []
        for iid in self.remaining(ctx.resource_id):
            ctx.step("restart", 50)
            try:
                restart_elsewhere(self.t, self.instances, iid, ctx.resource_id)
            except (ServiceError, DriverError, LookupError) as exc:
                errors.append(f"{iid}: {getattr(exc, 'message', exc)}")
        if errors:
            raise RuntimeError("some instances could not be evacuated: " + "; ".join(errors))

    def failed(self, ctx: TaskContext, error: str) -> None:
        """Instances not yet moved stay on the down host; the task lists them."""


def restart_elsewhere(
    t: InstanceTasks, instances: InstanceService, instance_id: str, dead_host_id: str
) -> str | None:
    """Move an instance of a down host to another host of its cluster (chosen by the
    scheduler: rule group and capacity obeyed, the HA reserve usable) and start it
    there if it was running (a suspended one arrives stopped: its saved memory was on
    the dead host); the name of that host, None if it had already moved."""
    with t.db.begin() as s:
        inst = s.get(Instance, instance_id)
        if inst is None or inst.host_id != dead_host_id:
            return None
        dead = s.get(Host, dead_host_id)
        assert dead is not None
        was = inst.status
        if inst.task_state != "evacuating":  # a resumed task finds its own mark
            claim(
                s,
                inst,
                (
                    InstanceStatus.RUNNING,
                    InstanceStatus.PAUSED,
                    InstanceStatus.SUSPENDED,
                    InstanceStatus.STOPPED,
                    InstanceStatus.ERROR,
                ),
                "evacuating",
                "instance",
            )
        target = instances.scheduler.place_elsewhere(s, inst, dead)
        local = unreachable_volumes(s, inst.id, target)
        if local:  # the data is on the dead host's own disks: it cannot come along
            raise Conflict(f"its volume(s) {', '.join(local)} are in a pool of the down host only")
        claims.release(s, dead.id, inst.vcpus, inst.memory_mib, inst.disk_gib)
        inst.host_id = target.id
        # its definition stays on the dead host: removed there once it answers again
        s.merge(StaleDomain(host_id=dead.id, instance_id=instance_id))
        target_name = target.name
        target_ref = t.hosts.ref(target)
        # the snapshots' data is in the disks, their metadata died with the host
        s.execute(
            update(Snapshot)
            .where(Snapshot.instance_id == instance_id)
            .values(status=SnapshotStatus.ERROR, error="metadata lost when the host failed")
        )
    try:
        root = t.root_on(target_ref, instance_id)
        if root is None:
            raise LookupError("its root disk is not on the cluster's shared storage")
        t.ports.prepare(target_ref, instance_id)
        spec = t.domain_spec(instance_id, root)
        t.driver.define(target_ref, spec)
        if was in (InstanceStatus.RUNNING, InstanceStatus.PAUSED):
            t.driver.start(target_ref, instance_id)
        t.settle(
            instance_id,
            InstanceStatus.RUNNING
            if was in (InstanceStatus.RUNNING, InstanceStatus.PAUSED)
            else InstanceStatus.STOPPED,
        )
    except Exception as exc:
        t.settle(instance_id, InstanceStatus.ERROR, f"evacuation failed: {exc}")
        raise
    return target_name
