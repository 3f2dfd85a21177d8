"""Shared fixtures: database URLs (SQLite always, PostgreSQL when configured)."""

from __future__ import annotations

import json
import os
import shutil
import statistics
from collections.abc import Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from sqlalchemy import Engine, make_url, text

from nubis.db import migrate
from nubis.db.models import Base
from nubis.db.session import Database, make_engine
from nubis.services.identity import passwords
from tests.pg import create_database, drop_database, fresh_schema

PG_URL = os.environ.get("NUBIS_TEST_DATABASE_URL")
# a slow call (libvirt, password hashing, qemu-img...) inside a database write
# transaction fails the test (nubis.blocking); servers the tests start inherit it
os.environ["NUBIS_STRICT_TRANSACTIONS"] = "1"
# in this process only (the servers tests start hash as in production): Argon2id with
# the least time and memory, so that the thousands of logins of the unit tests are cheap
passwords.use_hasher(PasswordHasher(time_cost=1, memory_cost=64, parallelism=1))


DURATIONS = Path(__file__).with_name("durations.json")  # scripts/test_durations.py


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The longest test modules first (seconds from the last recorded integration run),
    so that the workers, which take one module at a time, end together rather than
    one waiting for the other's last long module. A module's tests keep their order."""
    weights: dict[str, float] = json.loads(DURATIONS.read_text()) if DURATIONS.exists() else {}
    if not weights:
        return
    default = statistics.median(weights.values())
    items.sort(key=lambda item: -weights.get(item.nodeid.split("::")[0], default))


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
    """Databases migrated once per test process, reused by each test that wants a
    migrated database: the migrations run once, not before every test. SQLite: the
    migrated file is copied for each test. PostgreSQL: one database per test process,
    emptied for each test (every row deleted, the sequences restarted, then the rows
    the migrations wrote put back), which costs a fraction of copying a database."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._sqlite: Path | None = None
        self._pg: str | None = None
        self._pg_rows: dict[str, list[dict]] = {}
        self._pg_reset = ""
        self._pg_engine: Engine | None = None

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
            self._pg = create_database(PG_URL, prefix="unit")
            self._pg_engine = make_engine(self._pg)  # kept: it empties the database
            name = make_url(self._pg).database
            with self._pg_engine.begin() as conn:  # a test's data need not survive a power cut
                conn.execute(text(f'ALTER DATABASE "{name}" SET synchronous_commit = off'))
            _migrate(self._pg)
            with self._pg_engine.connect() as conn:
                self._pg_rows = {
                    t.name: [dict(r._mapping) for r in conn.execute(t.select())]
                    for t in Base.metadata.sorted_tables
                }
                sequences = conn.scalars(text("SELECT sequencename FROM pg_sequences")).all()
            # one statement, one round trip: DELETE is cheaper than TRUNCATE on tables
            # this small (no new files), and the sequences start again from 1
            deletes = [f'DELETE FROM "{t.name}";' for t in reversed(Base.metadata.sorted_tables)]
            restarts = [f'ALTER SEQUENCE "{seq}" RESTART;' for seq in sequences]
            self._pg_reset = "DO $$ BEGIN " + " ".join(deletes + restarts) + " END $$"
        else:
            self._empty()
        return self._pg

    def _empty(self) -> None:
        assert self._pg_engine is not None
        with self._pg_engine.begin() as conn:
            # the connections a test's engine left behind (ours, to this database) end
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND usename = current_user "
                    "AND pid <> pg_backend_pid()"
                )
            )
            conn.execute(text("SET LOCAL lock_timeout = '10s'"))  # a leak: fail, not hang
            conn.execute(text(self._pg_reset))
            for table in Base.metadata.sorted_tables:
                if self._pg_rows[table.name]:
                    conn.execute(table.insert(), self._pg_rows[table.name])

    def close(self) -> None:
        if self._pg is not None:
            assert PG_URL and self._pg_engine is not None
            self._pg_engine.dispose()
            drop_database(PG_URL, self._pg)


def _migrate(url: str) -> None:
    database = Database(url)
    try:
        migrate.upgrade(database.engine)
    finally:
        database.dispose()


@pytest.fixture(scope="session")
def templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Templates]:
    made = Templates(tmp_path_factory.mktemp("templates"))
    yield made
    made.close()


@pytest.fixture(params=_backends())
def migrated_db_url(request: pytest.FixtureRequest, tmp_path, templates: Templates) -> str:
    """A database at the newest schema with nothing in it but what the migrations
    wrote, private to the test while it runs."""
    if request.param == "sqlite":
        return templates.sqlite(tmp_path / "nubis.db")
    return templates.postgresql()


@pytest.fixture
def migrated_db(migrated_db_url: str) -> Iterator[Database]:
    """A ``Database`` on a private database at the newest schema."""
    database = Database(migrated_db_url)
    yield database
    database.dispose()
