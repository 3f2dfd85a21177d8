"""A control plane for in-process tests: a Platform on libvirt's test driver (hosts
are added by the test), no local host, no tiny image, no task workers, and none of
the loops tests drive themselves (notifications, metering, host health)."""

from __future__ import annotations

from pathlib import Path

from nubis.config import Settings
from nubis.platform import Platform


def started_control_plane(tmp: Path, database_url: str, data: str = "data") -> Platform:
    """A started Platform on ``database_url``, its data directory ``tmp/data``."""
    platform = Platform(
        Settings(
            data_dir=tmp / data,
            database_url=database_url,
            register_local_host=False,
            build_tiny_image=False,
            task_workers=0,
            collect_metrics=False,  # tests that want samples collect them themselves
            pool_path=tmp / "disks",
            console_path=tmp / "console",
        )
    )
    platform.start()
    # tests deliver notifications, sweep usage and judge host health themselves
    for loop in (platform.notifier, platform.meter, platform.ha):
        loop.stop()
    return platform
