"""Moving instances between hosts of a cluster: live and cold migration, cancel.

The target is claimed when the migration is accepted (in the request's
transaction); the source keeps its claim until the instance has moved, so
capacity is never promised twice. If anything fails, or the control plane dies
half-way, ``failed()`` looks where the domain really is and the instance ends
on that host with the other host's claim released.
"""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from nubis.db.models import Cluster, Host, Image, Instance, InstanceStatus, Task, TaskStatus
from nubis.db.session import Database
from nubis.drivers.errors import DriverError
from nubis.services.compute import host_disks
from nubis.services.compute.instance_tasks import InstanceTasks
from nubis.services.compute.instances import InstanceService
from nubis.services.compute.snapshots import refuse_if_snapshotted
from nubis.services.core.errors import BadRequest, Conflict
from nubis.services.core.guard import claim
from nubis.services.core.lookup import get_by_id_or_name
from nubis.services.core.principal import Principal
from nubis.services.core.submit import submit_task
from nubis.services.scheduler import claims
from nubis.services.storage.volumes import unreachable_volumes
from nubis.tasks.engine import TaskContext

log = logging.getLogger(__name__)
MIGRATABLE = (InstanceStatus.RUNNING, InstanceStatus.PAUSED, InstanceStatus.STOPPED)


class MigrationCancelled(Exception):
    """The user cancelled the migration before its libvirt job began."""


def check_compatible(source: Host, target: Host) -> None:
    """Refuse clearly what cannot work, before the scheduler is asked."""
    if target.id == source.id:
        raise BadRequest(f"the instance is already on host {source.name!r}")
    if target.cluster_id != source.cluster_id:
        raise BadRequest(
            f"hosts {source.name!r} and {target.name!r} are in different clusters and "
            "share no storage: migration stays inside a cluster"
        )
    if target.arch != source.arch:
        raise BadRequest(
            f"host {target.name!r} is {target.arch}, the instance runs on {source.arch}"
        )
    if target.effective_virt_type != source.effective_virt_type:
        raise BadRequest(
            f"host {target.name!r} runs {target.effective_virt_type} guests, the instance "
            f"is a {source.effective_virt_type} guest"
        )


def request_migration(
    instances: InstanceService,
    session: Session,
    principal: Principal | None,
    instance: Instance,
    host_ref: str | None,
    max_downtime_ms: int,
    max_bandwidth_mib_s: int | None = None,
) -> Task:
    """Guard, choose and claim a target, and queue the migration task."""
    source = session.get(Host, instance.host_id)
    if source is None:
        raise Conflict(f"instance {instance.name!r} is not on any host")
    target = get_by_id_or_name(session, Host, host_ref, "host") if host_ref else None
    if target is not None:
        check_compatible(source, target)
    if not 1 <= max_downtime_ms <= 60000:
        raise BadRequest("max_downtime_ms must be between 1 and 60000")
    if max_bandwidth_mib_s is not None and not 1 <= max_bandwidth_mib_s <= 100000:
        raise BadRequest("max_bandwidth_mib_s must be between 1 and 100000 (MiB/s)")
    refuse_if_snapshotted(
        session,
        instance,
        "which libvirt cannot carry to another host: delete them before migrating",
    )
    claim(session, instance, MIGRATABLE, "migrating", "instance")
    cluster = session.get(Cluster, source.cluster_id) if source.cluster_id else None
    chosen = instances.scheduler.place_elsewhere(
        session, instance, source, target.id if target else None
    )
    local = unreachable_volumes(session, instance.id, chosen)
    if local:
        raise Conflict(
            f"instance {instance.name!r} has volume(s) {', '.join(local)} in a pool only "
            f"its host {source.name!r} can reach: detach them, or keep them on shared storage"
        )
    return submit_task(
        instances.engine,
        session,
        principal,
        "instance.migrate",
        "instance",
        instance.id,
        params={
            "source_host_id": source.id,
            "target_host_id": chosen.id,
            "live": instance.status != InstanceStatus.STOPPED,
            "max_downtime_ms": max_downtime_ms,
            "max_bandwidth_mib_s": max_bandwidth_mib_s,
            "trust_shared_storage": bool(cluster is not None and cluster.trust_shared_storage),
        },
    )


CANCEL_FLAG = "cancel_requested"


def cancel(instances: InstanceService, session: Session, principal: Principal, ref: str) -> str:
    """Ask a live migration in flight to stop; the instance stays on its source host.

    The request is recorded on the migration's task: the task aborts the libvirt
    job as soon as there is one, or never starts it when asked before it began.
    """
    instance = instances.get(session, principal, ref)
    task = session.scalars(
        select(Task)
        .where(
            Task.resource_id == instance.id,
            Task.kind == MigrateHandler.kind,
            Task.status.in_((TaskStatus.QUEUED, TaskStatus.RUNNING)),
        )
        .with_for_update()
    ).first()
    if (
        instance.task_state != "migrating"
        or instance.status == InstanceStatus.STOPPED
        or task is None
        or not task.params.get("live")
    ):
        raise Conflict(f"instance {instance.name!r} has no live migration in progress")
    task.params = {**task.params, CANCEL_FLAG: True}
    return instance.id


def cancel_requested(db: Database, task_id: str) -> bool:
    with db.begin() as s:
        params = s.scalar(select(Task.params).where(Task.id == task_id))
    return bool(params and params.get(CANCEL_FLAG))


class MigrateHandler:
    """Moves the instance; between hosts that share no disk directory its files are
    copied first (a live migration copies the root disk's data with the memory) and
    removed from the host it left (``clean-up``)."""

    kind = "instance.migrate"
    steps = ("copy-disc", "networks", "disks", "migrate", "clean-up")
    resumable = False  # after a crash: find where the domain is, never migrate twice

    def __init__(self, tasks: InstanceTasks) -> None:
        self.t = tasks

    def _hosts(self, ctx: TaskContext) -> tuple[Host, Host]:
        with self.t.db.begin() as s:
            source = s.get(Host, ctx.params["source_host_id"])
            target = s.get(Host, ctx.params["target_host_id"])
            assert source is not None and target is not None
            return source, target

    def run(self, ctx: TaskContext) -> None:
        source, target = self._hosts(ctx)
        src, dst = self.t.hosts.ref(source), self.t.hosts.ref(target)
        with self.t.db.begin() as s:
            inst = s.get(Instance, ctx.resource_id)
            disc = s.get(Image, inst.cdrom_image_id) if inst and inst.cdrom_image_id else None
        if disc is not None:  # the disc in its CD-ROM drive must be there too
            ctx.step("copy-disc", 1)
            self.t.ensure_image_copy(dst, disc)
        ctx.step("networks", 1)
        # its networks and addresses there; on overlay networks, its frames go to
        # every host until it has landed (it is ``migrating``: see overlays.forwarding)
        self.t.ports.prepare(dst, ctx.resource_id)
        ctx.step("disks", 1)
        shared = self.t.driver.shares_disks(src, dst)
        copy: tuple[str, ...] = ()
        if not shared and ctx.params["live"]:
            copy = host_disks.prepare_live(self.t, src, dst, ctx.resource_id)
        elif not shared:
            host_disks.copy_cold(self.t, src, dst, ctx.resource_id)
        ctx.step("migrate", 1)
        if ctx.params["live"]:
            if cancel_requested(self.t.db, ctx.task_id):
                raise MigrationCancelled("migration cancelled before it started")
            self.t.driver.migrate_live(
                src,
                dst,
                ctx.resource_id,
                ctx.params["max_downtime_ms"],
                ctx.progress,
                trust_shared_storage=ctx.params.get("trust_shared_storage", False),
                max_bandwidth_mib_s=ctx.params.get("max_bandwidth_mib_s"),
                should_abort=lambda: cancel_requested(self.t.db, ctx.task_id),
                copy_disks=copy,
            )
        else:
            self.t.driver.migrate_cold(src, dst, ctx.resource_id)
        self._settle_on(ctx, target, source, state_known=True)
        ctx.step("clean-up", 99)
        if not shared:
            host_disks.remove(self.t, src, ctx.resource_id)

    def _settle_on(
        self, ctx: TaskContext, here: Host, other: Host, state_known: bool = False
    ) -> None:
        """The instance lives on ``here``: record it, release ``other``'s claim and
        remove what is left of it there (its serial log: the log goes on on ``here``)."""
        with self.t.db.begin() as s:
            inst = s.get(Instance, ctx.resource_id)
            if inst is None:
                return
            claims.release(s, other.id, inst.vcpus, inst.memory_mib, inst.disk_gib)
            inst.host_id = here.id
            inst.task_state = None
            domain_name = inst.domain_name
        # overlay networks: its neighbours' hosts send its frames to ``here`` now
        self.t.ports.overlays.sync_instance(ctx.resource_id)
        try:
            self.t.driver.delete_console_log(self.t.hosts.ref(other), domain_name)
        except DriverError:
            pass  # the other host is unreachable: removed with strays when it is back
        if not state_known:  # after a failure: take the state libvirt reports
            self.t.reconcile(ctx.resource_id)

    def failed(self, ctx: TaskContext, error: str) -> None:
        source, target = self._hosts(ctx)
        on_target = self.t.driver.defined_on(self.t.hosts.ref(target), ctx.resource_id)
        on_source = self.t.driver.defined_on(self.t.hosts.ref(source), ctx.resource_id)
        if on_target and not on_source:  # it moved; only the bookkeeping was missed
            here, other = target, source
        else:
            here, other = source, target
        self._settle_on(ctx, here, other)
        # hosts that share no disks: the copies on the host it did not end on go (when
        # both hosts answer and its domain is not defined there)
        try:
            here_ref, other_ref = self.t.hosts.ref(here), self.t.hosts.ref(other)
            if not self.t.driver.defined_on(other_ref, ctx.resource_id) and not (
                self.t.driver.shares_disks(here_ref, other_ref)
            ):
                host_disks.remove(self.t, other_ref, ctx.resource_id)
        except DriverError as exc:
            log.warning("files of %s not checked on %s: %s", ctx.resource_id, other.name, exc)
