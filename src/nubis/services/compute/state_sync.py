"""Keeps instance and host state true: libvirt events first, periodic reconciliation behind.

Events arrive on libvirt's event thread; they are queued and applied by one
sync thread so the event loop never waits for the database. Only instances
with no operation in flight (``task_state`` is NULL) take the reported state:
an operation in flight settles the state itself when it ends.

With several controllers each host is watched by one (``HostShares``): a
controller applies the events of the hosts it holds and reconciles those only;
the cluster-wide reconciliation (``also``: overlays, routers, pool capacities)
runs on the controller that leads ``reconcile``.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from sqlalchemy import delete, select
from sqlalchemy.exc import OperationalError

from nubis.db.models import Host, HostStatus, Instance, InstanceStatus, StaleDomain, utcnow
from nubis.db.session import Database
from nubis.drivers.errors import DriverError
from nubis.drivers.libvirt.compute import HostRef
from nubis.drivers.libvirt.connection import DomainEvent
from nubis.services.compute.instance_tasks import volume_names
from nubis.services.core import events
from nubis.services.core.guard import swap_all
from nubis.services.inventory.hosts import HostService
from nubis.tasks.host_shares import HostShares

log = logging.getLogger(__name__)
STABLE = (
    InstanceStatus.RUNNING,
    InstanceStatus.STOPPED,
    InstanceStatus.PAUSED,
    InstanceStatus.SUSPENDED,
)

# domain events applied in one transaction at most (a host that reboots with many guests,
# a burst of creates)
EVENT_BATCH = 200


class StateSync:
    def __init__(
        self,
        db: Database,
        hosts: HostService,
        interval: float,
        shares: HostShares | None = None,
        tick: float = 5.0,
    ) -> None:
        self.db = db
        self.hosts = hosts
        self.interval = interval
        # the hosts this controller watches (None: every host), rebalanced every tick
        self.shares = shares
        self.tick = tick
        # whether this controller runs the cluster-wide reconciliation (``also``)
        self.lead: Callable[[], bool] = lambda: True
        self._events: queue.Queue[DomainEvent | str | None] = queue.Queue()
        self._stop = threading.Event()
        self._share_now = threading.Event()
        self._threads: list[threading.Thread] = []
        # a domain's QEMU died: (instance id, host URI) -> True if someone restarts it
        self.on_crash: Callable[[str, str], bool] | None = None
        # other host state reconciled at the same pace (the overlay networks)
        self.also: list[Callable[[], object]] = []

    # called from libvirt's event thread: never block there
    def on_domain_event(self, event: DomainEvent) -> None:
        self._events.put(event)

    def on_disconnect(self, uri: str, _reason: str) -> None:
        self._events.put(uri)

    def start(self) -> None:
        self._stop.clear()
        loops = [(self._apply_events, "state-events"), (self._periodic, "reconcile")]
        if self.shares is not None:
            self.shares.rebalance()
            loops.append((self._share_hosts, "host-shares"))
        for target, name in loops:
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def share_now(self) -> None:
        """Share the hosts out at once (one was added), not at the next tick."""
        self._share_now.set()

    def stop(self) -> None:
        self._stop.set()
        self._share_now.set()
        self._events.put(None)
        for t in self._threads:
            t.join(5)
        self._threads.clear()

    def _apply_events(self) -> None:
        while not self._stop.is_set():
            batch = [self._events.get()]
            while len(batch) < EVENT_BATCH:  # what else has come meanwhile
                try:
                    batch.append(self._events.get_nowait())
                except queue.Empty:
                    break
            try:
                self._apply_batch(batch)
            except Exception:
                log.exception("applying %d domain event(s) failed", len(batch))

    def _apply_batch(self, batch: list[DomainEvent | str | None]) -> None:
        """The events of a batch in one transaction; an instance's last state counts
        (a burst of events for it ends in that one); a host that disconnected is
        refreshed after."""
        states: dict[tuple[str, str], str] = {}  # (instance id, host URI) -> state
        disconnected: list[str] = []
        for item in batch:
            if item is None:
                continue
            uri = item.uri if isinstance(item, DomainEvent) else item
            if self.shares is not None and not self.shares.owns_uri(uri):
                continue  # another controller watches that host
            if not isinstance(item, DomainEvent):
                disconnected.append(item)
                continue
            key = (item.uuid, item.uri)
            states.pop(key, None)  # a later event goes after the earlier ones
            try:
                if item.crashed and self.on_crash and self.on_crash(item.uuid, item.uri):
                    continue  # high availability restarts it
            except Exception:
                log.exception("handing the crash of %s to HA failed", item.uuid)
                continue  # the reconciliation looks at it again
            states[key] = item.state
        if states:
            self.apply(states)
        for uri in dict.fromkeys(disconnected):
            self.refresh_host_by_uri(uri)

    def apply(self, states: dict[tuple[str, str], str]) -> list[str]:
        """Set the power state each host reported (``(instance id, host URI) ->
        state``) on the idle instances that live on that host (a migrated-away
        domain's last event must not count), in one transaction; the ids changed.
        One read finds the instances a report could change (most events come from
        Nubis's own tasks, whose instances are busy); only those are swapped."""
        changed: list[str] = []
        with self.db.begin() as s:
            idle = {
                instance_id: (uri, status)
                for instance_id, uri, status in s.execute(
                    select(Instance.id, Host.uri, Instance.status)
                    .join(Host, Host.id == Instance.host_id)
                    .where(
                        Instance.id.in_({instance_id for instance_id, _ in states}),
                        Instance.task_state.is_(None),
                        Instance.status.in_(STABLE),
                    )
                )
            }
            grouped: dict[tuple[str, str], list[str]] = {}
            for (instance_id, uri), state in states.items():
                found = idle.get(instance_id)  # (where it lives, its status)
                if found is not None and found[0] == uri and found[1] != state:
                    grouped.setdefault((uri, state), []).append(instance_id)
            for (uri, state), ids in grouped.items():
                won = swap_all(
                    s,
                    Instance,
                    ids,
                    Instance.host_id.in_(select(Host.id).where(Host.uri == uri)),
                    Instance.status.in_(STABLE),
                    Instance.status != state,
                    status=state,
                )
                for instance in s.scalars(select(Instance).where(Instance.id.in_(won))):
                    events.instance_state(s, instance, state, "reported by libvirt")
                    log.info("instance %s is now %s (reported by libvirt)", instance.id, state)
                changed += won
        return changed

    def refresh_host_by_uri(self, uri: str) -> None:
        with self.db.begin() as s:
            host_id = s.scalar(select(Host.id).where(Host.uri == uri))
        if host_id is not None:
            self.hosts.refresh(self.db, host_id)

    def _periodic(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.reconcile_all()
            except Exception:
                log.exception("reconciliation failed")
            try:
                cluster = self.also if self.also and self.lead() else []
            except OperationalError as exc:
                log.warning(
                    "no cluster-wide reconciliation: the database is unreachable (%s)", exc.orig
                )
                cluster = []
            for reconcile in cluster:
                try:
                    reconcile()
                except Exception:
                    log.exception("reconciliation failed")

    def _share_hosts(self) -> None:
        """Every tick: this controller's share of the hosts; a host it gains is
        reconciled at once (which opens the connection its events come by)."""
        assert self.shares is not None
        while not self._stop.is_set():
            self._share_now.wait(self.tick)
            self._share_now.clear()
            if self._stop.is_set():
                return
            try:
                gained, lost = self.shares.rebalance()
                if gained or lost:
                    log.info("now watching %d more and %d fewer hosts", len(gained), len(lost))
                for host_id in gained:
                    self.reconcile_host(host_id)
            except OperationalError as exc:
                log.warning(
                    "the hosts were not shared out: the database is unreachable (%s)", exc.orig
                )
            except Exception:
                log.exception("sharing the hosts out failed")

    def reconcile_all(self) -> None:
        """Probe every host this controller watches and align idle instances with
        what libvirt reports."""
        if self.shares is not None:
            host_ids = self.shares.owned()
        else:
            with self.db.begin() as s:
                host_ids = list(s.scalars(select(Host.id)).all())
        for host_id in host_ids:
            self.reconcile_host(host_id)

    def reconcile_host(self, host_id: str) -> None:
        """Probe one host; if it is up, remove its stale domains and align its idle
        instances with what libvirt reports."""
        with self.db.begin() as s:
            known = s.get(Host, host_id)
            if known is None:
                return
            ref = self.hosts.ref(known)
        # an instance changed after this snapshot was taken knows better than it
        snapshot_at = utcnow()
        try:
            domains = self.hosts.driver.list_domains(ref)
        except DriverError:
            self.hosts.refresh(self.db, host_id)  # records it unreachable
            return
        # stale domains go before the host counts as up again
        self._remove_strays(host_id, ref, domains)
        host = self.hosts.refresh(self.db, host_id)
        if host is None or host.state != HostStatus.UP:
            return
        self._restart_crashed(host_id, ref, domains)
        with self.db.begin() as s:
            idle = s.scalars(
                select(Instance).where(
                    Instance.host_id == host_id,
                    Instance.task_state.is_(None),
                    Instance.status.in_(STABLE),
                    Instance.updated_at <= snapshot_at,
                )
            ).all()
            for inst in idle:
                state = domains.get(inst.id)
                if state is None:
                    inst.status = InstanceStatus.ERROR
                    inst.error = "the domain is missing on its host"
                    events.instance_state(s, inst, InstanceStatus.ERROR, inst.error)
                elif state != inst.status:
                    inst.status = state
                    events.instance_state(s, inst, state, "found by reconciliation")

    def _remove_stray_files(self, host_id: str, ref: HostRef, instance_id: str) -> None:
        """The files of an instance that left this host: its seed disc (and a root
        disk file) stay when the host was down as it left; removed unless the host
        where it runs now sees the same files (shared storage), or cannot be asked."""
        with self.db.read() as s:
            inst = s.get(Instance, instance_id)
            if inst is not None and inst.host_id == host_id:
                return  # back here: they are its files
            now = s.get(Host, inst.host_id) if inst is not None else None
            other = self.hosts.ref(now) if now is not None else None
        try:
            if other is not None and self.hosts.driver.shares_disks(ref, other):
                return
            for name in volume_names(instance_id):
                self.hosts.driver.delete_volume(ref, name)
        except DriverError as exc:
            log.warning("the files of %s stay on %s: %s", instance_id, ref.uri, exc)

    def _restart_crashed(self, host_id: str, ref: HostRef, domains: dict[str, str]) -> None:
        """An HA instance recorded running whose domain is off because its QEMU died:
        the crash event was missed (a connection hiccup); hand it to HA all the same."""
        if self.on_crash is None:
            return
        with self.db.begin() as s:
            candidates = s.scalars(
                select(Instance.id).where(
                    Instance.host_id == host_id,
                    Instance.ha_enabled.is_(True),
                    Instance.task_state.is_(None),
                    Instance.status == InstanceStatus.RUNNING,
                )
            ).all()
        for instance_id in candidates:
            if domains.get(instance_id) != InstanceStatus.STOPPED:
                continue
            try:
                if self.hosts.driver.crashed(ref, instance_id):
                    self.on_crash(instance_id, ref.uri)
            except DriverError:
                log.exception("could not read why domain %s stopped", instance_id)

    def _remove_strays(self, host_id: str, ref: HostRef, domains: dict[str, str]) -> None:
        """A domain left on a host whose instance was restarted elsewhere while this
        host was down must never start again: undefine it (the instance may have been
        deleted since: the stale-domain record says it was here). Its files go too
        where this host shares no disk directory with where it runs now."""
        with self.db.begin() as s:
            stale = set(
                s.scalars(select(StaleDomain.instance_id).where(StaleDomain.host_id == host_id))
            )
            if domains:
                stale |= set(
                    s.scalars(
                        select(Instance.id).where(
                            Instance.id.in_(list(domains)),
                            Instance.host_id != host_id,
                            Instance.task_state.is_(None),
                        )
                    )
                )
        removed = []
        for instance_id in stale:
            if instance_id in domains:
                log.warning("removing stale domain of %s from host %s", instance_id, host_id)
                try:
                    self.hosts.driver.undefine(ref, instance_id)
                    self.hosts.driver.delete_console_log(ref, f"nubis-{instance_id}")
                except DriverError:
                    log.exception("could not remove the stale domain %s", instance_id)
                    continue
            self._remove_stray_files(host_id, ref, instance_id)
            removed.append(instance_id)
        if removed:
            with self.db.begin() as s:
                s.execute(
                    delete(StaleDomain).where(
                        StaleDomain.host_id == host_id, StaleDomain.instance_id.in_(removed)
                    )
                )
