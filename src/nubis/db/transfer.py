"""A deployment's data moved into another database: ``nubis db migrate --to URL``,
for a deployment that started on the embedded SQLite file and grows onto PostgreSQL
(several controllers share one PostgreSQL, see docs/scale-out.md).

The target gets the schema from the migrations (Alembic), then every row of every
table, copied in one transaction of the target (parents before children) while the
source is held in one transaction too: on SQLite a write transaction, so no
controller can change it meanwhile. The row count of each table is compared before
the target's transaction commits: a copy that does not match leaves the target as
it was. A target that holds any row is refused, and so is a source a controller
is running on (its heartbeat is recent): stop ``nubis serve`` first.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Connection, Engine, Integer, func, inspect, select, text

from nubis.db import migrate
from nubis.db.models import Base, Controller, utcnow
from nubis.db.session import make_engine

BATCH = 1000
ALIVE = timedelta(minutes=1)  # a controller with a heartbeat this recent may be running


class TransferError(Exception):
    pass


def _tables_with_rows(conn: Connection) -> list[str]:
    present = set(inspect(conn).get_table_names())
    return [
        t.name
        for t in Base.metadata.sorted_tables
        if t.name in present and conn.execute(select(func.count()).select_from(t)).scalar()
    ]


def _check_target(target: Engine) -> None:
    try:
        with target.connect() as conn:
            full = _tables_with_rows(conn)
    except Exception as exc:
        raise TransferError(f"cannot use the target database: {exc}") from exc
    if full:
        raise TransferError(
            f"the target database already holds data (tables {', '.join(full[:5])}"
            f"{', ...' if len(full) > 5 else ''}): give an empty database"
        )


def _check_source(conn: Connection) -> None:
    if Controller.__tablename__ not in inspect(conn).get_table_names():
        return  # older than controllers that register themselves
    recent = conn.execute(
        select(Controller.id, Controller.address).where(Controller.heartbeat_at > utcnow() - ALIVE)
    ).all()
    if recent:
        running = ", ".join(f"{cid} ({address})" for cid, address in recent)
        raise TransferError(
            f"a controller is running on the source database: {running}; stop it (one "
            "that died leaves its heartbeat: wait a minute)"
        )


def _reset_sequences(conn: Connection) -> None:
    """PostgreSQL: an integer key's sequence past the rows copied in with their keys."""
    if conn.dialect.name != "postgresql":
        return
    for table in Base.metadata.sorted_tables:
        keys = list(table.primary_key.columns)
        if len(keys) == 1 and isinstance(keys[0].type, Integer):
            name = keys[0].name
            seq = conn.execute(
                text("SELECT pg_get_serial_sequence(:t, :c)"), {"t": table.name, "c": name}
            ).scalar()
            if seq:
                conn.execute(
                    text(
                        f'SELECT setval(:s, (SELECT COALESCE(MAX("{name}"), 0) + 1 '
                        f'FROM "{table.name}"), false)'
                    ),  # fmt: skip
                    {"s": seq},
                )


def copy_database(source_url: str, target_url: str) -> dict[str, int]:
    """Copy every row of the database at ``source_url`` into the empty database at
    ``target_url`` (its schema made by the migrations); the rows copied, per table."""
    if source_url == target_url:
        raise TransferError("the source and the target are the same database")
    source, target = make_engine(source_url), make_engine(target_url)
    try:
        _check_target(target)
        with source.connect() as conn:
            _check_source(conn)
        migrate.upgrade(source)  # as `nubis serve` would: the source at this code's schema
        migrate.upgrade(target)
        counts: dict[str, int] = {}
        with source.begin() as src, target.begin() as dst:
            _check_source(src)
            for table in Base.metadata.sorted_tables:
                copied = 0
                rows = src.execute(select(table)).mappings()
                while batch := rows.fetchmany(BATCH):
                    dst.execute(table.insert(), [dict(row) for row in batch])
                    copied += len(batch)
                had = src.execute(select(func.count()).select_from(table)).scalar()
                there = dst.execute(select(func.count()).select_from(table)).scalar()
                if not had == copied == there:
                    raise TransferError(
                        f"table {table.name}: {had} rows in the source, {copied} copied, "
                        f"{there} in the target: nothing was kept"
                    )
                counts[table.name] = copied
            _reset_sequences(dst)
        return counts
    finally:
        source.dispose()
        target.dispose()
