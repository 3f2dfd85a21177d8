"""Unit-level fixtures: a control plane with no task worker and no local libvirtd."""

import subprocess

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


def admin(client, platform):
    password = (platform.settings.data_dir / "admin-password").read_text().strip()
    token = client.post(
        "/api/v1/auth/tokens", json={"username": "admin", "password": password}
    ).json()["token"]
    client.headers["Authorization"] = f"Bearer {token}"
    return client


@pytest.fixture
def tiny_world(client, platform, tmp_path):
    """The system administrator's client and an image named ``tiny``."""
    c = admin(client, platform)
    image = tmp_path / "tiny.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", image, "16M"], check=True)
    resp = c.post(
        "/api/v1/images",
        params={"name": "tiny"},
        content=image.read_bytes(),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert resp.status_code == 201, resp.text
    return c
