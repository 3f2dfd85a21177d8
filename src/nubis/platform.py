"""The composition root: builds every part of a running Nubis and wires them together."""

from __future__ import annotations

import gc
import logging
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.orm import Session

from nubis.config import Settings
from nubis.db import migrate
from nubis.db.session import Database
from nubis.drivers.agent import AgentClient
from nubis.drivers.libvirt.compute import LibvirtDriver
from nubis.drivers.libvirt.connection import ConnectionPool
from nubis.drivers.libvirt.console import ConsoleDriver
from nubis.drivers.libvirt.networks import NetworkDriver
from nubis.drivers.libvirt.nics import NicDriver
from nubis.drivers.libvirt.nwfilters import FilterDriver
from nubis.drivers.libvirt.snapshots import SnapshotDriver
from nubis.drivers.libvirt.stats import StatsDriver
from nubis.drivers.libvirt.volumes import VolumeDriver
from nubis.services import bootstrap
from nubis.services.compute.console import ConsoleService
from nubis.services.compute.handlers import DrainSettings
from nubis.services.compute.handlers import handlers as compute_handlers
from nubis.services.compute.instance_tasks import InstanceTasks
from nubis.services.compute.instances import InstanceService
from nubis.services.compute.live_ports import LivePorts
from nubis.services.compute.nics import NicService
from nubis.services.compute.snapshots import SnapshotService
from nubis.services.compute.state_sync import StateSync
from nubis.services.core import events
from nubis.services.ha.handlers import handlers as ha_handlers
from nubis.services.ha.monitor import HaMonitor, HaSettings
from nubis.services.ha.recovery import RestartLimit
from nubis.services.housekeeping import Housekeeping
from nubis.services.identity.secrets import SecretBox
from nubis.services.identity.throttle import AddressThrottle, ThrottleSettings
from nubis.services.inventory.hosts import HostService
from nubis.services.monitoring.alarms import AlarmService
from nubis.services.monitoring.collector import Collector
from nubis.services.monitoring.metering import Meter
from nubis.services.monitoring.metrics import Retention
from nubis.services.monitoring.notifier import Notifier, Smtp
from nubis.services.network.floating_ips import FloatingIPService
from nubis.services.network.networks import NetworkService
from nubis.services.network.overlays import OverlayService
from nubis.services.network.ports import PortPlumbing
from nubis.services.network.routers import RouterService
from nubis.services.network.security_groups import SecurityGroupService
from nubis.services.network.vlans import VlanService
from nubis.services.scheduler import Scheduler, claims
from nubis.services.storage.handlers import handlers as storage_handlers
from nubis.services.storage.images import ImageService
from nubis.services.storage.pools import PoolService
from nubis.services.storage.volume_snapshot_tasks import VolumeSnapshotTasks
from nubis.services.storage.volume_snapshots import VolumeSnapshotService
from nubis.services.storage.volume_tasks import VolumeTasks
from nubis.services.storage.volume_transfers import VolumeTransfers
from nubis.services.storage.volumes import VolumeService
from nubis.tasks.engine import TaskEngine
from nubis.tasks.host_shares import HostShares
from nubis.tasks.in_flight import InFlight

log = logging.getLogger(__name__)


class Platform:
    def __init__(self, settings: Settings) -> None:
        settings.ensure_dirs()
        self.settings = settings
        self.db = Database(settings.db_url)
        self.box = SecretBox(settings.encryption_key())
        self.login_throttle = AddressThrottle(
            ThrottleSettings(
                settings.login_address_max_failures,
                settings.login_address_window_seconds,
                settings.login_address_block_seconds,
            )
        )
        self.conns = ConnectionPool(
            settings.keepalive_interval,
            settings.keepalive_count,
            on_domain_event=lambda e: self.sync.on_domain_event(e),
            on_disconnect=lambda uri, why: self.sync.on_disconnect(uri, why),
        )
        self.driver = LibvirtDriver(self.conns, settings.pool_path, settings.console_path)
        # the health checks and the statistics collector each have their own connection
        # to every host, used by one thread at a time: libvirt 9.0's client crashed the
        # process when a connection failed under calls from several threads (a check
        # and a getAllDomainStats)
        self.health_conns = ConnectionPool(settings.keepalive_interval, settings.keepalive_count)
        self.stats_conns = ConnectionPool(settings.keepalive_interval, settings.keepalive_count)
        self.hosts = HostService(self.driver, self.box)
        self.sync = StateSync(self.db, self.hosts, settings.reconcile_interval_seconds)
        self.housekeeping = Housekeeping(
            self.db,
            settings.audit_retention_days,
            settings.events_retention_days,
            login_throttle=self.login_throttle.rules,
        )
        self.engine = TaskEngine(
            self.db,
            settings.task_workers,
            settings.fault_inject,
            controller_id=settings.controller_id or bootstrap.controller_id(settings.data_dir),
            takeover_seconds=settings.task_takeover_seconds,
            address=f"{settings.listen_host}:{settings.listen_port}",
        )
        # what API calls do on the hosts outside tasks, leased while it runs
        self.in_flight = InFlight(self.engine.leadership)
        self.images = ImageService(
            settings.image_dir,
            self.hosts,
            settings.max_image_bytes,
            self.in_flight,
            settings.images_import_dir,
        )
        # each host is watched (events, reconciliation) by one controller
        self.sync.shares = HostShares(self.db, self.engine.leadership)
        self.sync.tick = self.engine.tick
        self.engine.on_finished.append(lambda task_id, status: self._task_event(task_id, status))
        self.scheduler = Scheduler()
        self.volume_driver = VolumeDriver(self.conns)
        self.volumes = VolumeService(self.engine)
        self.volume_tasks = VolumeTasks(self.engine, self.volume_driver, self.hosts, self.images)
        self.images.on_delete.append(self.volume_tasks.bases.remove)
        # bases of images deleted while a pool could not be reached, or by a process
        # that died half-way
        self.housekeeping.also.append(self.volume_tasks.bases.sweep)
        self.housekeeping.also.append(
            lambda: self.images.cleanup_partials(settings.task_takeover_seconds)
        )
        self.instances = InstanceService(self.engine, self.hosts, self.scheduler, self.volumes)
        self.network_driver = NetworkDriver(self.conns)
        self.filter_driver = FilterDriver(self.conns)
        agents = AgentClient()
        self.overlays = OverlayService(self.db, self.network_driver, agents, self.hosts)
        self.networks = NetworkService(
            self.db,
            self.network_driver,
            self.filter_driver,
            self.hosts,
            self.overlays,
            VlanService(agents),
            self.in_flight,
        )
        self.routers = RouterService(
            self.db, agents, self.hosts, self.overlays, self.networks, self.in_flight
        )
        self.floating_ips = FloatingIPService(self.db, self.routers)
        self.security_groups = SecurityGroupService(self.db, self.filter_driver, self.hosts)
        self.instance_tasks = InstanceTasks(
            self.engine,
            self.driver,
            self.hosts,
            self.images,
            PortPlumbing(
                self.db,
                self.network_driver,
                self.filter_driver,
                self.security_groups,
                self.overlays,
                self.routers.sync_networks,
            ),
            settings.stop_timeout_seconds,
            self.volume_tasks,
        )
        self.console = ConsoleService(
            self.db,
            self.instances,
            self.hosts,
            ConsoleDriver(self.conns),
            settings.console_ticket_seconds,
        )
        self.nics = NicService(self.instances, self.instance_tasks, NicDriver(self.conns))
        self.live_ports = LivePorts(self.instances, self.instance_tasks, self.nics.driver)
        self.ha = HaMonitor(
            self.db,
            self.hosts,
            self.engine,
            settings.pool_path,
            HaSettings(
                check_interval=settings.ha_check_interval_seconds,
                down_after=settings.host_down_after_seconds,
            ),
            on_back=self._host_back,
            ping=LibvirtDriver(self.health_conns, settings.pool_path, settings.console_path).ping,
        )
        self.sync.on_crash = self.ha.on_crash
        self.sync.also.append(self.overlays.sync_all)
        self.sync.also.append(self.routers.sync_all)
        self.pools = PoolService(self.db, self.volume_driver, self.hosts, self.in_flight)
        self.sync.also.append(self.pools.refresh_all)
        # what an API call of a controller that died left half-done is undone by the
        # controller that leads the reconciliation (its own, by each at its start-up)
        self.sync.also += [
            self.pools.undo_interrupted,
            self.networks.undo_interrupted,
            self.routers.undo_interrupted,
            lambda: self.images.requeue_interrupted(self.db),
        ]
        self.volume_transfers = VolumeTransfers(
            self.volumes, self.volume_driver, self.hosts, settings.data_dir / "spool"
        )
        self.volume_snapshots = VolumeSnapshotService(self.volumes)
        self.snapshots = SnapshotService(self.instances)
        self._register_handlers(settings)
        self.retention = Retention(
            settings.metrics_interval_seconds,
            settings.metrics_raw_hours,
            settings.metrics_5min_days,
            settings.metrics_hourly_days,
        )
        self.alarms = AlarmService(
            self.db, self.box, smtp_configured=settings.smtp_host is not None
        )
        smtp = (
            Smtp(settings.smtp_host, settings.smtp_port, settings.smtp_sender)
            if settings.smtp_host
            else None
        )
        self.notifier = Notifier(self.db, self.box, smtp)
        self.meter = Meter(self.db, settings.metering_interval_seconds)
        self.collector = Collector(
            self.db,
            self.hosts,
            StatsDriver(self.stats_conns),
            self.retention,
            on_cycle=[self._evaluate_alarms],
        )
        # the loops that run on one controller at a time
        leadership = self.engine.leadership
        for name, loop in (
            ("ha-monitor", self.ha),
            ("metrics", self.collector),
            ("metering", self.meter),
            ("notifier", self.notifier),
            ("housekeeping", self.housekeeping),
            ("reconcile", self.sync),
        ):
            loop.lead = leadership.gate(name)
        self.admin_password_file: Path | None = None
        event.listen(self.db.sessionmaker, "after_commit", self._after_commit)

    def _register_handlers(self, settings: Settings) -> None:
        """Every task kind, one list per capability, registered the same way."""
        drain = DrainSettings(
            settings.maintenance_parallel,
            settings.migration_max_downtime_ms,
            settings.migration_max_bandwidth_mib_s,
        )
        restarts = RestartLimit(settings.ha_max_restarts, settings.ha_restart_window_seconds)
        for handler in (
            *compute_handlers(
                self.instance_tasks,
                self.instances,
                self.nics,
                self.live_ports,
                SnapshotDriver(self.conns),
                self.images,
                self.volume_driver,
                drain,
            ),
            *storage_handlers(
                self.volume_tasks,
                VolumeSnapshotTasks(self.engine, self.volume_driver, self.hosts),
                self.volume_transfers,
            ),
            *ha_handlers(self.instance_tasks, self.instances, restarts, settings.pool_path),
        ):
            self.engine.register(handler)

    def _host_back(self, host_id: str) -> None:
        """A host answers again: its instances are aligned, its storage pools (one
        made while it was down included), its cluster's networks (the overlays'
        forwarding tables included) and its routers put on it."""
        self.sync.reconcile_host(host_id)
        self.pools.ensure_on_host(host_id)
        self.networks.ensure_on_host(host_id)
        self.routers.sync_host(host_id)

    def _evaluate_alarms(self, now: float) -> None:
        if self.alarms.evaluate_all(now, self.retention.interval):
            self.notifier.wake()

    def _task_event(self, task_id: str, status: str) -> None:
        try:
            events.task_finished(self.db, task_id, status)
        except Exception:  # an event is not worth failing the task's bookkeeping for
            log.exception("could not record the event of task %s", task_id)

    def _after_commit(self, session: Session) -> None:
        if session.info.pop("nubis_wake_tasks", False):
            self.engine.wake()

    def start(self) -> None:
        """Migrate, bootstrap, recover interrupted work, then start workers and sync."""
        migrate.upgrade(self.db.engine)
        self.admin_password_file = bootstrap.seed(self.db, self.settings.data_dir)
        self.images.cleanup_partials(self.settings.task_takeover_seconds)
        self.images.requeue_interrupted(self.db)
        self.pools.undo_interrupted()
        self.networks.undo_interrupted()
        self.routers.undo_interrupted()
        if self.settings.register_local_host:
            bootstrap.ensure_local_host(self.db, self.hosts, self.settings.local_host_uri)
        if self.settings.build_tiny_image:
            bootstrap.ensure_tiny_image(self.db, self.images)
        if self.settings.register_local_host and self.settings.first_run_defaults:
            bootstrap.first_run_defaults(
                self.db, self.pools, self.networks, self.settings.default_pool_path
            )
        recovered = self.engine.recover()
        if recovered:
            log.warning("recovered %d interrupted task(s)", len(recovered))
        # after recovery (whose clean-ups release what interrupted tasks claimed), the
        # claim counters are recomputed from where the instances are
        with self.db.begin() as s:
            claims.heal(s)
        self.engine.start()
        self.sync.start()
        self.sync.reconcile_all()
        self.ha.start()
        self.housekeeping.start()
        if self.settings.collect_metrics:
            self.collector.start()
        self.notifier.start()
        self.meter.start()
        # everything loaded so far lives as long as the process: keep it out of the
        # cyclic GC's full collections, which otherwise pause requests by tens of ms
        gc.freeze()

    def stop(self) -> None:
        self.collector.stop()
        self.notifier.stop()
        self.meter.stop()
        self.housekeeping.stop()
        self.ha.stop()
        self.sync.stop()
        self.engine.stop()
        for pool in (self.conns, self.health_conns, self.stats_conns):
            pool.close_all()
        self.db.dispose()
