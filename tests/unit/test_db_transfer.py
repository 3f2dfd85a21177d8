"""`nubis db migrate`: a deployment on SQLite copied whole into an empty PostgreSQL
database (every row of every table, read back equal), a controller started on it;
refused, with the target unchanged, while a controller runs on the source or when
the target holds data."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, inspect, select

from nubis.api.app import create_app
from nubis.db.models import Base
from nubis.db.session import make_engine
from nubis.db.transfer import TransferError, copy_database
from nubis.platform import Platform
from tests.control_planes import started_control_plane
from tests.pg import private_database

PG_URL = os.environ.get("NUBIS_TEST_DATABASE_URL")
pytestmark = pytest.mark.skipif(not PG_URL, reason="NUBIS_TEST_DATABASE_URL not set")


@pytest.fixture
def target() -> Iterator[str]:
    assert PG_URL
    with private_database(PG_URL, "mig") as url:
        yield url


def login(client: TestClient, platform: Platform) -> None:
    password = (platform.settings.data_dir / "admin-password").read_text().strip()
    token = client.post("/api/v1/auth/tokens", json={"username": "admin", "password": password})
    assert token.status_code == 201, token.text
    client.headers["Authorization"] = f"Bearer {token.json()['token']}"


def everything(url: str) -> dict[str, list[dict]]:
    """Every row of every table, in key order."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return {
                t.name: [
                    dict(r)
                    for r in conn.execute(select(t).order_by(*t.primary_key.columns)).mappings()
                ]
                for t in Base.metadata.sorted_tables
            }
    finally:
        engine.dispose()


def test_a_sqlite_deployment_moves_whole_to_postgresql(tmp_path, target):
    source = f"sqlite:///{tmp_path / 'nubis.db'}"
    first = started_control_plane(tmp_path, source)
    try:
        first.hosts.add(first.db, "fake", "test:///default")
        with TestClient(create_app(first, manage_lifecycle=False)) as client:
            login(client, first)
            for body in (
                ("/api/v1/zones", {"name": "dc2"}),
                ("/api/v1/clusters", {"name": "gold", "zone": "dc2", "cpu_ratio": 2.5}),
                ("/api/v1/flavors", {"name": "m9", "vcpus": 2, "memory_mib": 512, "disk_gib": 3}),
            ):
                assert client.post(body[0], json=body[1]).status_code == 201
        with pytest.raises(TransferError, match="a controller is running"):
            copy_database(source, target)  # the running controller would change it
    finally:
        first.stop()  # a clean stop: it leaves the controllers' list
    engine = make_engine(target)
    assert inspect(engine).get_table_names() == []  # refused before anything was made
    engine.dispose()

    counts = copy_database(source, target)
    before, after = everything(source), everything(target)
    assert after == before  # every row of every table, value for value
    assert counts["hosts"] == 1 and counts["audit_records"] >= 3 and counts["users"] >= 2
    assert sum(counts.values()) == sum(len(rows) for rows in before.values())

    # a controller on PostgreSQL: the same admin password, the same resources
    second = started_control_plane(tmp_path, target)  # the same data directory (its keys)
    try:
        with TestClient(create_app(second, manage_lifecycle=False)) as client:
            login(client, second)
            assert [h["name"] for h in client.get("/api/v1/hosts").json()["items"]] == ["fake"]
            assert client.get("/api/v1/clusters/gold").json()["cpu_ratio"] == 2.5
            assert client.get("/api/v1/flavors/m9").json()["vcpus"] == 2
            assert client.post("/api/v1/zones", json={"name": "dc3"}).status_code == 201
    finally:
        second.stop()

    with pytest.raises(TransferError, match="already holds data"):
        copy_database(source, target)  # never into a database with rows
    engine = make_engine(target)
    with engine.connect() as conn:
        zones = conn.execute(select(func.count()).select_from(Base.metadata.tables["zones"]))
        assert zones.scalar() == 3  # default, dc2, dc3: nothing added by the refused copy
    engine.dispose()
