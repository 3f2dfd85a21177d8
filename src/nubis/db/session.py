"""Engine and session factory. The caller owns the transaction: ``with db.begin() as s``
to change something, ``with db.read() as s`` to only read.

On SQLite a write transaction takes the database's write lock at its start (``BEGIN
IMMEDIATE``), so read-then-write is serialised; a read transaction is deferred and
never takes it (WAL: readers and the one writer do not wait for each other). Read
sessions are read-only on both databases: a write in one is an error, not a lock.
Nothing slow may run inside a write transaction (see ``nubis.blocking``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import CursorResult, Engine, Update, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from nubis import blocking


def changed_one(session: Session, statement: Update) -> bool:
    """Run a conditional ``UPDATE`` of one row (a compare-and-swap): True if it
    changed the row, False if its conditions did not hold."""
    result: CursorResult[Any] = session.execute(statement)  # type: ignore[assignment]
    return result.rowcount == 1


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # noqa: ANN001
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def make_engine(url: str, read_only: bool = False) -> Engine:
    """An engine; ``read_only`` (SQLite): deferred, read-only transactions."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)

        # pysqlite's own transaction handling defers BEGIN; take the write lock
        # at the start of each transaction so read-then-write is serialised.
        @event.listens_for(engine, "connect")
        def _no_pysqlite_begin(dbapi_conn, _record) -> None:  # noqa: ANN001
            dbapi_conn.isolation_level = None
            if read_only:
                dbapi_conn.execute("PRAGMA query_only=ON")

        @event.listens_for(engine, "begin")
        def _begin(conn) -> None:  # noqa: ANN001
            conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


class Database:
    """Owns the engines and hands out sessions."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        if url.startswith("sqlite"):
            self.read_engine = make_engine(url, read_only=True)
        else:  # the same connections, in read-only transactions
            self.read_engine = self.engine.execution_options(postgresql_readonly=True)
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)
        self.read_sessionmaker = sessionmaker(self.read_engine, expire_on_commit=False)

    @contextmanager
    def begin(self) -> Iterator[Session]:
        """A session inside one write transaction: committed on success, rolled back on
        error. Nothing slow inside (``nubis.blocking``)."""
        with blocking.writing(), self.sessionmaker.begin() as session:
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session inside one read-only transaction (deferred: no lock is taken)."""
        with self.read_sessionmaker.begin() as session:
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
        self.read_engine.dispose()
