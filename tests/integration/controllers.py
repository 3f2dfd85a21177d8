"""Several controllers (``nubis serve`` processes, each with its own data directory)
on one PostgreSQL database: how the tests start them."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.integration.server import NubisServer
from tests.pg import private_database

PG_URL = os.environ.get("NUBIS_TEST_DATABASE_URL")
TAKEOVER = 6.0  # seconds: a lease of 4.5 s, renewed every 1.5 s


@contextmanager
def shared_database(name: str) -> Iterator[str]:
    """A private PostgreSQL database the controllers of one test share."""
    if not PG_URL:
        pytest.skip("NUBIS_TEST_DATABASE_URL not set: several controllers need PostgreSQL")
    with private_database(PG_URL, name) as url:
        yield url


def controller(data_dir: Path, database: str, key: str, **env: str) -> NubisServer:
    data_dir.parent.mkdir(parents=True)
    return NubisServer(
        data_dir,
        NUBIS_DATABASE_URL=database,
        NUBIS_SECRET_KEY=key,  # the same on every controller: it decrypts stored secrets
        NUBIS_TASK_TAKEOVER_SECONDS=str(TAKEOVER),
        NUBIS_HA_CHECK_INTERVAL_SECONDS="1",
        NUBIS_RECONCILE_INTERVAL_SECONDS="600",
        **env,
    )


def join(first: NubisServer, other: NubisServer, **env: str) -> NubisServer:
    """Start ``other`` beside ``first``: the first one's image store (shared, as over
    NFS), the admin's password the first one made."""
    other.data_dir.mkdir()
    (other.data_dir / "images").symlink_to(first.data_dir / "images")
    shutil.copy(first.data_dir / "admin-password", other.data_dir / "admin-password")
    return other.start(NUBIS_REGISTER_LOCAL_HOST="0", NUBIS_BUILD_TINY_IMAGE="0", **env)


def controller_id(server: NubisServer) -> str:
    return (server.data_dir / "controller-id").read_text().strip()


def leader_of(servers: list[NubisServer], lease: str, timeout: float = 3 * TAKEOVER) -> NubisServer:
    """The one of ``servers`` that leads ``lease`` (``ha-monitor``...)."""
    by_id = {controller_id(s): s for s in servers}
    deadline = time.monotonic() + timeout
    listed: list[dict] = []
    while time.monotonic() < deadline:
        listed = servers[0].client.get("/controllers").json()
        for c in listed:
            if c["alive"] and lease in c["leads"] and c["id"] in by_id:
                return by_id[c["id"]]
        time.sleep(0.3)
    raise AssertionError(f"none of them leads {lease}: {listed}")
