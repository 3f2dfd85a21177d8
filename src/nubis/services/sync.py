"""Keeps instance and host state true: libvirt events first, periodic reconciliation behind.

Events arrive on libvirt's event thread; they are queued and applied by one
sync thread so the event loop never waits for the database. Only instances
with no operation in flight (``task_state`` is NULL) take the reported state:
an operation in flight settles the state itself when it ends.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from sqlalchemy import select, update

from nubis.db.models import Host, Instance, utcnow
from nubis.db.session import Database
from nubis.drivers.errors import DriverError
from nubis.drivers.libvirt.compute import HostRef
from nubis.drivers.libvirt.connection import DomainEvent
from nubis.services import events
from nubis.services.hosts import HostService

log = logging.getLogger(__name__)
STABLE = ("running", "stopped", "paused")


class StateSync:
    def __init__(self, db: Database, hosts: HostService, interval: float) -> None:
        self.db = db
        self.hosts = hosts
        self.interval = interval
        self._events: queue.Queue[DomainEvent | str | None] = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        # a domain's QEMU died: (instance id, host URI) -> True if someone restarts it
        self.on_crash: Callable[[str, str], bool] | None = None

    # called from libvirt's event thread: never block there
    def on_domain_event(self, event: DomainEvent) -> None:
        self._events.put(event)

    def on_disconnect(self, uri: str, _reason: str) -> None:
        self._events.put(uri)

    def start(self) -> None:
        self._stop.clear()
        for target, name in ((self._apply_events, "state-events"), (self._periodic, "reconcile")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        self._events.put(None)
        for t in self._threads:
            t.join(5)
        self._threads.clear()

    def _apply_events(self) -> None:
        while not self._stop.is_set():
            item = self._events.get()
            if item is None:
                continue
            try:
                if isinstance(item, DomainEvent):
                    if item.crashed and self.on_crash and self.on_crash(item.uuid, item.uri):
                        continue  # high availability restarts it
                    self.apply(item.uuid, item.state, item.uri)
                else:
                    self.refresh_host_by_uri(item)
            except Exception:
                log.exception("applying %r failed", item)

    def apply(self, instance_id: str, state: str, uri: str) -> bool:
        """Set a power state reported by host ``uri`` on an idle instance that lives
        there (a migrated-away domain's last event must not count); True if changed."""
        with self.db.begin() as s:
            changed = s.execute(
                update(Instance)
                .where(
                    Instance.id == instance_id,
                    Instance.host_id.in_(select(Host.id).where(Host.uri == uri)),
                    Instance.task_state.is_(None),
                    Instance.status.in_(STABLE),
                    Instance.status != state,
                )
                .values(status=state)
            ).rowcount
            if changed:
                instance = s.get(Instance, instance_id)
                assert instance is not None
                events.instance_state(s, instance, state, "reported by libvirt")
        if changed:
            log.info("instance %s is now %s (reported by libvirt)", instance_id, state)
        return bool(changed)

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

    def reconcile_all(self) -> None:
        """Probe every host and align idle instances with what libvirt reports."""
        with self.db.begin() as s:
            host_ids = list(s.scalars(select(Host.id)).all())
        for host_id in host_ids:
            host = self.hosts.refresh(self.db, host_id)
            if host is None or host.state != "up":
                continue
            ref = self.hosts.ref(host)
            # an instance changed after this snapshot was taken knows better than it
            snapshot_at = utcnow()
            try:
                domains = self.hosts.driver.list_domains(ref)
            except DriverError:
                continue
            self._remove_strays(host_id, ref, domains)
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
                        inst.status = "error"
                        inst.error = "the domain is missing on its host"
                        events.instance_state(s, inst, "error", inst.error)
                    elif state != inst.status:
                        inst.status = state
                        events.instance_state(s, inst, state, "found by reconciliation")

    def _remove_strays(self, host_id: str, ref: HostRef, domains: dict[str, str]) -> None:
        """A domain left on a host whose instance now lives on another host (it was
        evacuated while this host was down) must never start again: undefine it."""
        if not domains:
            return
        with self.db.begin() as s:
            strays = s.scalars(
                select(Instance.id).where(
                    Instance.id.in_(list(domains)),
                    Instance.host_id != host_id,
                    Instance.task_state.is_(None),
                )
            ).all()
        for instance_id in strays:
            log.warning("removing stale domain of instance %s from host %s", instance_id, host_id)
            try:
                self.hosts.driver.undefine(ref, instance_id)
                self.hosts.driver.delete_console_log(ref, f"nubis-{instance_id}")
            except DriverError:
                log.exception("could not remove the stale domain %s", instance_id)
