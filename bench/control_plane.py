"""A started control plane for benchmarks: no task workers, no local libvirtd, a
SQLite file in a fresh directory unless a PostgreSQL URL is given."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import create_engine, text

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


@contextmanager
def private_schema(url: str) -> Iterator[str]:
    """A URL of a fresh PostgreSQL schema in the database ``url`` names, dropped
    afterwards: the database is left as it was."""
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        sep = "&" if "?" in url else "?"
        yield f"{url}{sep}options={quote(f'-csearch_path={schema}')}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
