"""Shared fixtures: database URLs (SQLite always, PostgreSQL when configured)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from nubis.db import migrate
from nubis.db.session import Database
from nubis.services.identity import passwords
from tests.pg import create_database, drop_database, fresh_schema

PG_URL = os.environ.get("NUBIS_TEST_DATABASE_URL")
# a slow call (libvirt, password hashing, qemu-img...) inside a database write
# transaction fails the test (nubis.blocking); servers the tests start inherit it
os.environ["NUBIS_STRICT_TRANSACTIONS"] = "1"
# in this process only (the servers tests start hash as in production): Argon2id with
# the least time and memory, so that the thousands of logins of the unit tests are cheap
passwords.use_hasher(PasswordHasher(time_cost=1, memory_cost=64, parallelism=1))


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


class Templates:
    """Databases migrated once per test process, copied for each test that wants a
    migrated database (a file copy for SQLite, ``CREATE DATABASE ... TEMPLATE`` for
    PostgreSQL): the migrations run once, not before every test."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._sqlite: Path | None = None
        self._pg: str | None = None

    def sqlite(self, target: Path) -> str:
        if self._sqlite is None:
            path = self.directory / "template.db"
            _migrate(f"sqlite:///{path}")
            self._sqlite = path
        shutil.copyfile(self._sqlite, target)
        return f"sqlite:///{target}"

    def postgresql(self) -> str:
        assert PG_URL
        if self._pg is None:
            self._pg = create_database(PG_URL, prefix="template")
            _migrate(self._pg)
        return create_database(PG_URL, template=_name(self._pg))

    def close(self) -> None:
        if self._pg is not None:
            drop_database(self._pg)


def _migrate(url: str) -> None:
    database = Database(url)
    try:
        migrate.upgrade(database.engine)
    finally:
        database.dispose()


def _name(url: str) -> str:
    return url.rsplit("/", 1)[1].split("?")[0]


@pytest.fixture(scope="session")
def templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Templates]:
    made = Templates(tmp_path_factory.mktemp("templates"))
    yield made
    made.close()


@pytest.fixture(params=_backends())
def migrated_db_url(
    request: pytest.FixtureRequest, tmp_path, templates: Templates
) -> Iterator[str]:
    """A database at the newest schema, private to the test (a copy of a template)."""
    if request.param == "sqlite":
        yield templates.sqlite(tmp_path / "nubis.db")
        return
    url = templates.postgresql()
    try:
        yield url
    finally:
        drop_database(url)


@pytest.fixture
def migrated_db(migrated_db_url: str) -> Iterator[Database]:
    """A ``Database`` on a private database at the newest schema."""
    database = Database(migrated_db_url)
    yield database
    database.dispose()
