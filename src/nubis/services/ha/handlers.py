"""Every task kind of high availability, in one list the platform registers."""

from __future__ import annotations

from pathlib import Path

from nubis.services.compute.instance_tasks import InstanceTasks
from nubis.services.compute.instances import InstanceService
from nubis.services.ha.recovery import FailoverHandler, RestartInPlaceHandler, RestartLimit
from nubis.tasks.engine import TaskHandler


def handlers(
    tasks: InstanceTasks, instances: InstanceService, restarts: RestartLimit, pool_path: Path
) -> list[TaskHandler]:
    return [
        FailoverHandler(tasks, instances, restarts, pool_path),
        RestartInPlaceHandler(tasks, restarts),
    ]
