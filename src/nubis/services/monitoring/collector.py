"""Sampling hosts and instances every interval: counters read in bulk from each host
(drivers/libvirt/stats.py), turned into rates against the previous reading, stored
by the metrics store; then roll-up and pruning. Thresholds crossed by a host's
allocation become events."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from nubis.db.models import Host, HostStatus, Instance
from nubis.db.session import Database
from nubis.drivers.errors import DriverError
from nubis.drivers.libvirt.base import HostRef
from nubis.drivers.libvirt.stats import DomainCounters, HostCounters, StatsDriver
from nubis.services.core import events
from nubis.services.inventory.hosts import HostService
from nubis.services.monitoring import metrics
from nubis.services.monitoring.metrics import Retention
from nubis.services.scheduler.state import load_host_states

log = logging.getLogger(__name__)
T = TypeVar("T")
MIB = 1024
GIB = 1024**3
# a read of counters that took longer is dropped: libvirt took them at some moment
# of the call, and a rate over a time that uncertain is wrong (a read held up for
# seconds by a busy libvirtd, stamped at its end, made an idle guest look busy)
UNCERTAIN_SECONDS = 0.5


def timed_read(read: Callable[[HostRef], T], ref: HostRef) -> tuple[float, T] | None:
    """When the counters were read (the middle of the call), and them; None when the
    call took longer than ``UNCERTAIN_SECONDS``."""
    before = time.time()
    counters = read(ref)
    after = time.time()
    if after - before > UNCERTAIN_SECONDS:
        log.info("counters dropped: reading them took %.1f s", after - before)
        return None
    return (before + after) / 2, counters


@dataclass(frozen=True)
class Reading:
    at: float
    counters: DomainCounters | HostCounters


def _rate(new: int, old: int, seconds: float) -> float | None:
    if new < old:  # the counter started again (the guest restarted)
        return None
    return (new - old) / seconds


def instance_row(
    instance_id: str, vcpus: int, new: Reading, old: Reading | None
) -> dict[str, object]:
    c = new.counters
    assert isinstance(c, DomainCounters)
    row: dict[str, object] = {
        "instance_id": instance_id,
        "ts": int(new.at),
        "memory_mib": round(c.rss_kib / MIB, 1) if c.rss_kib else None,
    }
    if old is not None and isinstance(old.counters, DomainCounters) and new.at > old.at:
        o, dt = old.counters, new.at - old.at
        cpu = _rate(c.cpu_time_ns, o.cpu_time_ns, dt)
        row["cpu_pct"] = None if cpu is None else min(100.0, cpu / 1e7 / max(vcpus, 1))
        for name, field in (
            ("disk_read_bps", "rd_bytes"),
            ("disk_write_bps", "wr_bytes"),
            ("disk_read_iops", "rd_reqs"),
            ("disk_write_iops", "wr_reqs"),
            ("net_rx_bps", "rx_bytes"),
            ("net_tx_bps", "tx_bytes"),
            ("net_rx_pps", "rx_pkts"),
            ("net_tx_pps", "tx_pkts"),
        ):
            row[name] = _rate(getattr(c, field), getattr(o, field), dt)
    return row


def host_row(
    host_id: str, allocated_pct: float | None, new: Reading, old: Reading | None
) -> dict[str, object]:
    c = new.counters
    assert isinstance(c, HostCounters)
    row: dict[str, object] = {
        "host_id": host_id,
        "ts": int(new.at),
        "memory_total_mib": round(c.memory_total_kib / MIB, 1),
        "memory_used_mib": round((c.memory_total_kib - c.memory_available_kib) / MIB, 1),
        "memory_allocated_pct": allocated_pct,
        "storage_used_gib": None
        if c.storage_used_bytes is None
        else round(c.storage_used_bytes / GIB, 2),
        "storage_total_gib": None
        if c.storage_total_bytes is None
        else round(c.storage_total_bytes / GIB, 2),
    }
    if old is not None and isinstance(old.counters, HostCounters):
        total = c.cpu_total_ns - old.counters.cpu_total_ns
        busy = c.cpu_busy_ns - old.counters.cpu_busy_ns
        row["cpu_pct"] = round(100.0 * busy / total, 2) if total > 0 and busy >= 0 else None
    return row


class Collector:
    def __init__(
        self,
        db: Database,
        hosts: HostService,
        driver: StatsDriver,
        retention: Retention,
        on_cycle: list[Callable[[float], None]] | None = None,
    ) -> None:
        self.db = db
        self.hosts = hosts
        self.driver = driver
        self.retention = retention
        self.on_cycle = on_cycle if on_cycle is not None else []
        # whether this controller runs the loop's next round (one controller at a
        # time when several share the database: Leadership.gate)
        self.lead: Callable[[], bool] = lambda: True
        self._last: dict[str, Reading] = {}
        self._over: dict[str, bool] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def collect_once(self) -> tuple[int, int]:
        """Sample every host that is up and its running instances; (hosts, instances)."""
        with self.db.begin() as s:
            hosts = [
                (h.id, self.hosts.ref(h))
                for h in s.scalars(select(Host))
                if h.state == HostStatus.UP
            ]
            placed = select(Instance.id, Instance.vcpus).where(Instance.host_id.is_not(None))
            vcpus = {iid: n for iid, n in s.execute(placed)}
            allocated = {}
            for state in load_host_states(s):
                memory = state.limits()[1]
                total = memory.overcommitted
                allocated[state.id] = 100.0 * state.alloc_memory_mib / total if total else None
                over = memory.limit > 0 and state.alloc_memory_mib >= memory.limit
                self._threshold(s, state.id, state.name, over, allocated[state.id])
        host_rows: list[dict[str, object]] = []
        instance_rows: list[dict[str, object]] = []
        for host_id, ref in hosts:
            try:
                read = timed_read(self.driver.domains, ref)
            except DriverError as exc:
                log.debug("no domain statistics from %s: %s", ref.uri, exc)
                continue
            at, domains = read if read is not None else (0.0, [])
            for counters in domains:
                if counters.uuid not in vcpus:
                    continue  # not (or no longer) an instance of ours
                new = Reading(at, counters)
                old = self._last.get(counters.uuid)
                if old is not None and int(old.at) == int(at):
                    continue  # one sample per second at most
                instance_rows.append(instance_row(counters.uuid, vcpus[counters.uuid], new, old))
                self._last[counters.uuid] = new
            try:
                host_read = timed_read(self.driver.host, ref)
            except DriverError as exc:
                log.debug("no host statistics from %s: %s", ref.uri, exc)
                continue
            if host_read is None:
                continue
            new = Reading(*host_read)
            previous = self._last.get(host_id)
            if previous is not None and int(previous.at) == int(new.at):
                continue
            host_rows.append(host_row(host_id, allocated.get(host_id), new, previous))
            self._last[host_id] = new
        with self.db.begin() as s:
            metrics.store(s, metrics.HOSTS, host_rows)
            metrics.store(s, metrics.INSTANCES, instance_rows)
        return len(host_rows), len(instance_rows)

    def _threshold(
        self, s: Session, host_id: str, name: str, over: bool, pct: float | None
    ) -> None:
        """An event when a host's memory allocation reaches its cluster's limit
        (the overcommitted total times the disable threshold), and when it drops back."""
        before = self._over.get(host_id)
        self._over[host_id] = over
        if before is None and not over or before == over:
            return
        message = (
            f"host {name} memory allocation reached its cluster's limit "
            f"({pct or 0:.0f} % of the overcommitted total)"
            if over
            else f"host {name} memory allocation is back under its cluster's limit"
        )
        events.record(
            s,
            "capacity.threshold",
            message,
            "host",
            host_id,
            severity="warning" if over else "info",
            resource_name=name,
        )

    def maintain(self) -> None:
        with self.db.begin() as s:
            metrics.rollup(s)
            metrics.prune(s, self.retention)

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                if not self.lead():  # another controller collects
                    self._stop.wait(self.retention.interval)
                    continue
                self.collect_once()
                self.maintain()
                for listener in self.on_cycle:
                    listener(time.time())
            except Exception:  # a database or host hiccup: the next round tries again
                log.exception("metrics collection failed")
            self._stop.wait(max(0.0, self.retention.interval - (time.monotonic() - started)))

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="metrics", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
