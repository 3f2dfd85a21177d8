"""A started control plane for benchmarks: no task workers, no local libvirtd, a
SQLite file in a fresh directory unless a PostgreSQL URL is given."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from nubis.config import Settings
from nubis.platform import Platform


@contextmanager
def control_plane(name: str, database_url: str | None) -> Iterator[Platform]:
    tmp = Path(tempfile.mkdtemp(prefix=f"nubis-bench-{name}-"))
    settings = Settings(
        data_dir=tmp / "data",
        database_url=database_url,
        register_local_host=False,
        build_tiny_image=False,
        task_workers=0,
        pool_path=tmp / "disks",
        console_path=tmp / "console",
    )
    platform = Platform(settings)
    platform.start()
    try:
        yield platform
    finally:
        platform.stop()
