"""Host health and failover: up -> unreachable -> down, fencing, HA restarts.

Every ``check_interval`` each host is checked (a TCP connect to its libvirt port
with a short timeout, then the cheapest libvirt call, bounded in time). Two failed
checks in a row make an up host ``unreachable`` (a dropped connection, seen by the
state sync, does at once); only after ``down_after`` seconds of failed checks is
it judged, so a short network blip never fails anything over:

0. If more than half of its cluster's hosts are not up at once, nothing is done:
   more likely this control plane is the one cut off (``host.no_quorum``).
1. Its instances' disk leases are read from the cluster's lockspace (virtlockd on
   shared storage). A lease still held means that VM still runs: libvirtd died or
   the management network is cut, the host is not dead. It stays ``unreachable``
   (``host.isolated``) and nothing is restarted.
2. Otherwise the host is fenced with its agent (IPMI power off; the devcluster's
   kill). A failed fence leaves it ``unreachable`` and is tried again.
3. Then it is ``down`` and a ``host.failover`` task restarts its HA instances on
   the other hosts, highest priority first. A host with neither a fence agent nor a
   lockspace is marked down but its instances are not restarted: nothing proves
   they stopped (an operator evacuates it after checking).

A crashed QEMU process on a healthy host is restarted in place
(``instance.ha-restart``). Restarts of one instance are limited to ``max_restarts``
per ``restart_window``. See docs/high-availability.md for the guarantees.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from nubis.db.models import (
    Cluster,
    Host,
    HostStatus,
    Instance,
    InstanceStatus,
    Task,
    TaskStatus,
    utcnow,
)
from nubis.db.session import Database
from nubis.drivers.errors import DriverError
from nubis.drivers.fencing import AGENTS, FenceError
from nubis.drivers.leases import lease_held
from nubis.drivers.libvirt.compute import HostRef
from nubis.drivers.reachability import port_open
from nubis.services.compute.instance_tasks import root_volume_name
from nubis.services.core import events
from nubis.services.core.guard import swap
from nubis.services.inventory.hosts import HostService, mark_unreachable
from nubis.tasks.engine import TaskEngine

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HaSettings:
    check_interval: float = 5.0
    down_after: float = 20.0
    check_timeout: float = 5.0
    # consecutive failed checks before an up host is unreachable (a libvirtd slow to
    # answer once, under load, is not a failure; a closed connection is, at once)
    fail_checks: int = 2
    fence_retry: float = 30.0


class HaMonitor:
    def __init__(
        self,
        db: Database,
        hosts: HostService,
        engine: TaskEngine,
        pool_path: Path,
        settings: HaSettings,
        on_back: Callable[[str], None],
        ping: Callable[[HostRef], None],
    ) -> None:
        self.db = db
        self.hosts = hosts
        self.engine = engine
        self.pool_path = pool_path
        self.settings = settings
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="ha-check")
        self._inflight: dict[str, Future[str | None]] = {}
        self._noted: set[str] = set()
        self._failures: dict[str, int] = {}
        self._fence_tried: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # whether this controller runs the loop's next round (one controller at a
        # time when several share the database: Leadership.gate)
        self.lead: Callable[[], bool] = lambda: True
        # a host answers again: (host id) -> probe it, remove its stale domains, align
        # its instances (the state sync's reconcile_host)
        self.on_back = on_back
        # the cheapest libvirt call, on a connection only the checks use
        self.ping = ping

    # -- the loop ---------------------------------------------------------------------
    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="ha-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        while not self._stop.wait(self.settings.check_interval):
            try:
                if not self.lead():  # another controller checks the hosts
                    self._failures.clear()
                    continue
                self.check_all()
            except Exception:
                log.exception("host health check failed")

    def check_all(self) -> None:
        """Check every host at once (one query for all of them) and apply the results."""
        with self.db.begin() as s:
            hosts = {h.id: (h.state, self.hosts.ref(h)) for h in s.scalars(select(Host))}
        waiting = {}
        for host_id, (_state, ref) in hosts.items():
            previous = self._inflight.get(host_id)
            if previous is not None and not previous.done():
                waiting[host_id] = previous  # still hanging: it counts as a failure below
                continue
            self._inflight[host_id] = waiting[host_id] = self._pool.submit(self._probe, ref)
        deadline = time.monotonic() + self.settings.check_timeout
        for host_id, future in waiting.items():
            try:
                error = future.result(timeout=max(0.0, deadline - time.monotonic()))
            except FutureTimeout:
                error = f"no answer from libvirt within {self.settings.check_timeout:g} s"
            except Exception as exc:  # a probe must never stop the others
                error = str(exc)
            self.observe(host_id, error, hosts[host_id][0])

    def _probe(self, ref: HostRef) -> str | None:
        """None when the host answers, else why it does not."""
        error = port_open(ref.uri, self.settings.check_timeout)
        if error is not None:
            return error
        try:
            self.ping(ref)
        except DriverError as exc:
            return str(exc)
        return None

    # -- decisions --------------------------------------------------------------------
    def observe(self, host_id: str, error: str | None, known_state: str | None = None) -> None:
        """Apply one check's result to the host's state (``known_state``: as just read;
        a host up and answering needs no database work then)."""
        judge = False
        failures = self._failures[host_id] = (
            0 if error is None else self._failures.get(host_id, 0) + 1
        )
        if error is None and known_state == HostStatus.UP:
            return
        with self.db.begin() as s:
            host = s.get(Host, host_id)
            if host is None:
                return
            if error is None:
                back = host.state != HostStatus.UP
            else:
                back = False
                if host.state == HostStatus.UP and failures < self.settings.fail_checks:
                    return  # once is not yet a failure
                mark_unreachable(s, host, error)
                since = host.unreachable_since
                judge = (
                    host.state == HostStatus.UNREACHABLE
                    and since is not None
                    and (utcnow() - since).total_seconds() >= self.settings.down_after
                )
        if back:
            self._noted.discard(host_id)
            self._fence_tried.pop(host_id, None)
            self.on_back(host_id)
        elif judge:
            self.judge(host_id)

    def judge(self, host_id: str) -> None:
        """The host has not answered for ``down_after``: is it dead? (See the module
        docstring for the order: leases, fence, down, failover.)"""
        with self.db.begin() as s:
            host = s.get(Host, host_id)
            assert host is not None
            cluster = s.get(Cluster, host.cluster_id) if host.cluster_id else None
            lockspace = Path(cluster.ha_lockspace) if cluster and cluster.ha_lockspace else None
            on_host = list(s.scalars(select(Instance.id).where(Instance.host_id == host_id)))
            method, params, name = host.fence_method, self.hosts.fence_params(host), host.name
            peers = list(s.scalars(select(Host.state).where(Host.cluster_id == host.cluster_id)))
        lost = sum(1 for state in peers if state != HostStatus.UP)
        if host.cluster_id is not None and len(peers) > 1 and 2 * lost > len(peers):
            # most of the cluster at once: more likely this control plane is the one cut
            # off (or the lockspace with it); no quorum, no failover
            self._note(
                host_id,
                name,
                "host.no_quorum",
                f"{lost} of {len(peers)} hosts of its "
                "cluster are not answering: nothing is failed over without a majority",
            )
            return
        if lockspace is not None:
            if not lockspace.is_dir():  # unmounted: leases cannot be read, nothing proven
                self._note(
                    host_id,
                    name,
                    "host.isolated",
                    f"the lockspace {lockspace} cannot be read: nothing is failed over",
                )
                return
            alive = [i for i in on_host if lease_held(lockspace, self._root_path(i))]
            if alive:
                self._note(
                    host_id,
                    name,
                    "host.isolated",
                    f"libvirt does not answer, but "
                    f"{len(alive)} instance(s) still hold their disk leases: they are "
                    "running, so nothing is restarted elsewhere",
                )
                return
        self._noted.discard(host_id)
        fenced: str | None = None
        if method != "none":
            last = self._fence_tried.get(host_id)
            if last is not None and time.monotonic() - last < self.settings.fence_retry:
                return
            self._fence_tried[host_id] = time.monotonic()
            try:
                fenced = AGENTS[method].fence(params)
            except FenceError as exc:
                self._event(host_id, name, "host.fence_failed", f"fencing failed: {exc}", "error")
                return
        self._declare_down(host_id, fenced, proven=fenced is not None or lockspace is not None)

    def _declare_down(self, host_id: str, fenced: str | None, proven: bool) -> None:
        with self.db.begin() as s:
            host = s.get(Host, host_id)
            if host is None or host.state != HostStatus.UNREACHABLE:
                return  # it came back meanwhile
            host.state = HostStatus.DOWN
            if fenced:
                host.fenced_at = utcnow()
                events.record(
                    s,
                    "host.fenced",
                    f"host {host.name} fenced: {fenced}",
                    "host",
                    host.id,
                    severity="warning",
                    resource_name=host.name,
                )
            why = (
                ""
                if proven
                else (
                    ": no fence agent and no lockspace prove its VMs stopped, so none is "
                    "restarted; evacuate it once you know it is off"
                )
            )
            events.record(
                s,
                "host.down",
                f"host {host.name} is down{why}",
                "host",
                host.id,
                severity="error",
                resource_name=host.name,
            )
            has_ha = s.scalar(
                select(Instance.id)
                .where(Instance.host_id == host_id, Instance.ha_enabled.is_(True))
                .limit(1)
            )
            busy = s.scalar(
                select(Task.id)
                .where(
                    Task.resource_id == host_id,
                    Task.status.in_((TaskStatus.QUEUED, TaskStatus.RUNNING)),
                )
                .limit(1)
            )
            if proven and has_ha and not busy:
                self.engine.submit(s, "host.failover", "host", host_id)

    def _note(self, host_id: str, name: str, kind: str, message: str) -> None:
        """An event saying why a host is not failed over, once per unreachable period."""
        if host_id in self._noted:
            return
        self._noted.add(host_id)
        self._event(host_id, name, kind, message, "warning")

    def _event(self, host_id: str, name: str, kind: str, message: str, severity: str) -> None:
        with self.db.begin() as s:
            events.record(
                s,
                kind,
                f"host {name}: {message}",
                "host",
                host_id,
                severity=severity,
                resource_name=name,
            )

    def _root_path(self, instance_id: str) -> str:
        return str(self.pool_path / root_volume_name(instance_id))

    # -- a QEMU process died on a healthy host ------------------------------------------
    def on_crash(self, instance_id: str, uri: str) -> bool:
        """Called by the state sync for a domain whose QEMU exited unexpectedly: an idle,
        running HA instance is restarted in place (True); others are left to the sync."""
        with self.db.begin() as s:
            marked = swap(
                s,
                Instance,
                instance_id,
                Instance.host_id.in_(select(Host.id).where(Host.uri == uri)),
                Instance.ha_enabled.is_(True),
                Instance.status == InstanceStatus.RUNNING,
                task_state="restarting",
            )
            if not marked:
                return False
            instance = s.get(Instance, instance_id)
            assert instance is not None
            events.record(
                s,
                "instance.crashed",
                f"instance {instance.name}: its QEMU process died",
                "instance",
                instance.id,
                severity="error",
                project_id=instance.project_id,
                resource_name=instance.name,
            )
            self.engine.submit(
                s,
                "instance.ha-restart",
                "instance",
                instance_id,
                project_id=instance.project_id,
            )
        return True
