"""The tasks of high availability: restart a down host's HA instances elsewhere
(``host.failover``) and a crashed HA instance in place (``instance.ha-restart``).

Each restart is an ``instance.ha_restart`` event; an instance restarted
``max_restarts`` times within ``window`` seconds is not restarted again (a crash
loop or a restart storm stops there, with an ``instance.ha_gave_up`` event).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nubis.db.models import Cluster, Host, Instance, InstanceStatus, utcnow
from nubis.db.models.monitoring import Event
from nubis.drivers.errors import DriverError
from nubis.drivers.leases import lease_held
from nubis.services.compute import root_volumes
from nubis.services.compute.host_drain import restart_elsewhere
from nubis.services.compute.instance_tasks import InstanceTasks, root_volume_name
from nubis.services.compute.instances import InstanceService
from nubis.services.core import events
from nubis.services.core.errors import ServiceError
from nubis.tasks.engine import TaskContext

log = logging.getLogger(__name__)
RESTARTED = "instance.ha_restart"


class RestartLimit:
    def __init__(self, max_restarts: int, window_seconds: float) -> None:
        self.max_restarts = max_restarts
        self.window = timedelta(seconds=window_seconds)

    def exceeded(self, session: Session, instance_id: str) -> bool:
        recent = session.scalar(
            select(func.count()).where(
                Event.resource_id == instance_id,
                Event.kind == RESTARTED,
                Event.created_at >= utcnow() - self.window,
            )
        )
        return (recent or 0) >= self.max_restarts

    def give_up(self, session: Session, instance: Instance) -> None:
        instance.status = InstanceStatus.ERROR
        instance.task_state = None
        instance.error = (
            f"high availability gave up: restarted {self.max_restarts} times in "
            f"{int(self.window.total_seconds())} s"
        )
        events.record(
            session,
            "instance.ha_gave_up",
            f"instance {instance.name}: {instance.error}",
            "instance",
            instance.id,
            severity="error",
            project_id=instance.project_id,
            resource_name=instance.name,
        )


def record_restart(session: Session, instance: Instance, message: str) -> None:
    events.record(
        session,
        RESTARTED,
        f"instance {instance.name} {message}",
        "instance",
        instance.id,
        severity="warning",
        project_id=instance.project_id,
        resource_name=instance.name,
    )


class FailoverHandler:
    """Restart the HA instances of a fenced (or provably stopped) host elsewhere."""

    kind = "host.failover"
    resumable = True  # it looks at what is still on the host each time
    steps = ("restart",)

    def __init__(
        self,
        tasks: InstanceTasks,
        instances: InstanceService,
        limit: RestartLimit,
        pool_path: Path,
    ) -> None:
        self.t = tasks
        self.instances = instances
        self.limit = limit
        self.pool_path = pool_path

    def _queue(self, host_id: str) -> tuple[list[str], Path | None]:
        """HA instances still on the host, highest priority first, and the lockspace of
        its cluster (if any)."""
        with self.t.db.begin() as s:
            queue = list(
                s.scalars(
                    select(Instance.id)
                    .where(Instance.host_id == host_id, Instance.ha_enabled.is_(True))
                    .order_by(Instance.ha_priority.desc(), Instance.created_at)
                )
            )
            lockspace = s.scalar(
                select(Cluster.ha_lockspace)
                .join(Host, Host.cluster_id == Cluster.id)
                .where(Host.id == host_id)
            )
        return queue, Path(lockspace) if lockspace else None

    def run(self, ctx: TaskContext) -> None:
        queue, lockspace = self._queue(ctx.resource_id)
        errors = []
        for done, iid in enumerate(queue):
            ctx.step("restart", int(100 * done / max(1, len(queue))))
            try:
                self._restart(iid, ctx.resource_id, lockspace)
            except (ServiceError, DriverError, LookupError) as exc:
                errors.append(f"{iid}: {getattr(exc, 'message', exc)}")
        if errors:
            raise RuntimeError("some HA instances were not restarted: " + "; ".join(errors))

    def _restart(self, instance_id: str, host_id: str, lockspace: Path | None) -> None:
        with self.t.db.begin() as s:
            inst = s.get(Instance, instance_id)
            if inst is None or inst.host_id != host_id:
                return
            if self.limit.exceeded(s, instance_id):
                self.limit.give_up(s, inst)
                return
            host = s.get(Host, host_id)
            unfenced = host is None or host.fence_method == "none"
            if unfenced and root_volumes.find(s, instance_id) is not None:
                # a root disk on a pool holds no lease in the lockspace: only a fence
                # proves its QEMU stopped
                raise ServiceError(
                    "its root disk is on a storage pool and its host has no fence agent: "
                    "nothing proves it stopped"
                )
        if lockspace and lease_held(lockspace, str(self.pool_path / root_volume_name(instance_id))):
            raise ServiceError("its disk lease is still held: it still runs somewhere")
        target = restart_elsewhere(self.t, self.instances, instance_id, host_id)
        if target is None:
            return
        with self.t.db.begin() as s:
            inst = s.get(Instance, instance_id)
            assert inst is not None
            record_restart(s, inst, f"restarted on host {target} (its host failed)")

    def failed(self, ctx: TaskContext, error: str) -> None:
        """Instances not restarted stay on the down host; the task and events say which."""


class RestartInPlaceHandler:
    """An HA instance whose QEMU process died on a healthy host: start it again there."""

    kind = "instance.ha-restart"
    resumable = True
    steps = ("start",)

    def __init__(self, tasks: InstanceTasks, limit: RestartLimit) -> None:
        self.t = tasks
        self.limit = limit

    def run(self, ctx: TaskContext) -> None:
        with self.t.db.begin() as s:
            inst = s.get(Instance, ctx.resource_id)
            if inst is None:
                return
            if self.limit.exceeded(s, inst.id):
                self.limit.give_up(s, inst)
                return
        loaded = self.t.load(ctx.resource_id)
        ctx.step("start", 50)
        if self.t.driver.state(loaded.ref, ctx.resource_id) != InstanceStatus.RUNNING:
            self.t.ports.prepare(loaded.ref, ctx.resource_id)
            self.t.driver.start(loaded.ref, ctx.resource_id)
        with self.t.db.begin() as s:
            inst = s.get(Instance, ctx.resource_id)
            assert inst is not None
            inst.status, inst.task_state, inst.error = InstanceStatus.RUNNING, None, None
            record_restart(s, inst, f"restarted in place on host {loaded.host.name}")

    def failed(self, ctx: TaskContext, error: str) -> None:
        self.t.reconcile(ctx.resource_id)
