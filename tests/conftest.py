"""Shared fixtures: database URLs (SQLite always, PostgreSQL when configured)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.pg import fresh_schema

PG_URL = os.environ.get("NUBIS_TEST_DATABASE_URL")
# a slow call (libvirt, password hashing, qemu-img...) inside a database write
# transaction fails the test (nubis.blocking); servers the tests start inherit it
os.environ["NUBIS_STRICT_TRANSACTIONS"] = "1"


def _backends() -> list:
    backends = [pytest.param("sqlite", id="sqlite")]
    backends.append(
        pytest.param(
            "postgresql",
            id="postgresql",
            marks=pytest.mark.skipif(not PG_URL, reason="NUBIS_TEST_DATABASE_URL not set"),
        )
    )
    return backends


@pytest.fixture(params=_backends())
def db_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """A fresh, empty database: a SQLite file, or a private PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'nubis.db'}"
        return
    assert PG_URL
    with fresh_schema(PG_URL) as url:
        yield url
