"""Unit-level fixtures: a control plane with no task worker and no local libvirtd."""

import pytest
from fastapi.testclient import TestClient

from nubis.api.app import create_app
from tests.control_planes import started_control_plane
from tests.unit.identity_world import Caller, build


@pytest.fixture
def db(migrated_db):
    """The database alone, at the newest schema (the engine, scheduler SQL, IPAM tests)."""
    return migrated_db


@pytest.fixture
def control_plane(migrated_db_url, tmp_path):
    """A started Platform on a fresh database; hosts are added by the test module."""
    platform = started_control_plane(tmp_path, migrated_db_url)
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
