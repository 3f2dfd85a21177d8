"""Every task kind of the compute capability, in one list the platform registers."""

from __future__ import annotations

from dataclasses import dataclass

from nubis.drivers.libvirt.snapshots import SnapshotDriver
from nubis.drivers.libvirt.volumes import VolumeDriver
from nubis.services.compute import resize, snapshots
from nubis.services.compute.host_drain import EvacuateHandler, MaintenanceHandler
from nubis.services.compute.instance_tasks import InstanceTasks
from nubis.services.compute.instances import InstanceService
from nubis.services.compute.live_ports import LivePorts
from nubis.services.compute.media import BootOrderHandler, MediaHandler
from nubis.services.compute.migration import MigrateHandler
from nubis.services.compute.nics import NicService
from nubis.services.compute.templates import TemplateHandler, VolumeTemplateHandler
from nubis.services.storage.images import ImageService
from nubis.tasks.engine import TaskHandler


@dataclass(frozen=True)
class DrainSettings:
    """How a host is emptied (maintenance): migrations at once and their limits."""

    parallel: int
    max_downtime_ms: int
    max_bandwidth_mib_s: int | None


def handlers(
    tasks: InstanceTasks,
    instances: InstanceService,
    nics: NicService,
    live_ports: LivePorts,
    snapshot_driver: SnapshotDriver,
    images: ImageService,
    volume_driver: VolumeDriver,
    drain: DrainSettings,
) -> list[TaskHandler]:
    drains: list[TaskHandler] = [
        handler(tasks, instances, drain.parallel, drain.max_downtime_ms, drain.max_bandwidth_mib_s)
        for handler in (MaintenanceHandler, EvacuateHandler)
    ]
    return [
        *tasks.handlers(),
        *nics.handlers(),
        *live_ports.handlers(),
        *resize.handlers(tasks),
        *snapshots.handlers(tasks.db, snapshot_driver, tasks.driver, tasks.hosts),
        MigrateHandler(tasks),
        TemplateHandler(tasks),
        VolumeTemplateHandler(images, tasks.db, volume_driver, tasks.hosts),
        MediaHandler(tasks),
        BootOrderHandler(tasks),
        *drains,
    ]
