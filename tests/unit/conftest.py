"""Unit-level fixtures: a control plane with no task worker and no local libvirtd."""

import pytest
from fastapi.testclient import TestClient

from nubis.api.app import create_app
from nubis.config import Settings
from nubis.platform import Platform
from tests.unit.identity_world import Caller, build


@pytest.fixture
def db(migrated_db):
    """The database alone, at the newest schema (the engine, scheduler SQL, IPAM tests)."""
    return migrated_db


@pytest.fixture
def control_plane(migrated_db_url, tmp_path):
    """A started Platform on a fresh database; hosts are added by the test module."""
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=migrated_db_url,
        register_local_host=False,
        build_tiny_image=False,
        task_workers=0,
        collect_metrics=False,  # tests that want samples collect them themselves
        pool_path=tmp_path / "disks",
        console_path=tmp_path / "console",
    )
    platform = Platform(settings)
    platform.start()
    # tests deliver notifications, sweep usage and judge host health themselves
    platform.notifier.stop()
    platform.meter.stop()
    platform.ha.stop()
    yield platform
    platform.stop()


@pytest.fixture
def platform(control_plane):
    """The control plane with one host: libvirt's test:/// driver."""
    control_plane.hosts.add(control_plane.db, "fake", "test:///default")
    return control_plane


@pytest.fixture
def client(platform):
    """A client of the REST API holding no credentials."""
    with TestClient(create_app(platform, manage_lifecycle=False)) as c:
        yield c


@pytest.fixture
def callers(client, platform) -> dict[str, Caller]:
    """Projects p1 and p2 and a user in every role (tests/unit/identity_world.py)."""
    return build(client, platform)
