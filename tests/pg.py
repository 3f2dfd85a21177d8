"""Private PostgreSQL schemas and databases for tests and benchmark runs."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

from sqlalchemy import Engine, create_engine, make_url, text


@contextmanager
def fresh_schema(url: str, prefix: str = "t") -> Iterator[str]:
    """``url`` with its search path set to a new, empty schema (dropped afterwards)."""
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in url else "?"
    try:
        yield f"{url}{sep}options={quote(f'-csearch_path={schema}')}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def _admin(url: str) -> Engine:
    return create_engine(url, isolation_level="AUTOCOMMIT")


def database_url(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def create_database(url: str, prefix: str = "t") -> str:
    """A new, empty database on ``url``'s server; its URL."""
    name = f"nubis_{prefix}_{uuid.uuid4().hex[:12]}"
    admin = _admin(url)
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    return database_url(url, name)


def drop_database(server_url: str, url: str) -> None:
    """Drop the database ``url`` names, from the database of ``server_url`` (a
    database cannot drop itself). Our connections to it are ended first; DROP
    DATABASE then waits for them to go and stops an autovacuum worker that is in
    there (WITH (FORCE) would fail on the worker instead: another role's process)."""
    name = make_url(url).database
    admin = _admin(server_url)
    try:
        with admin.connect() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND usename = current_user "
                    "AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    finally:
        admin.dispose()


@contextmanager
def private_database(server_url: str, prefix: str = "t") -> Iterator[str]:
    """A new, empty database on ``server_url``'s server while the block runs; its URL."""
    url = create_database(server_url, prefix)
    try:
        yield url
    finally:
        drop_database(server_url, url)
