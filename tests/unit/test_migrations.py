"""The Alembic migrations build exactly the schema the models describe, on SQLite and
PostgreSQL: a model change without its migration (or the reverse) fails here."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from nubis.db import migrate
from nubis.db.models import Base
from nubis.db.session import make_engine


def test_migrations_match_the_models(db_url):
    engine = make_engine(db_url)
    try:
        migrate.upgrade(engine)
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": False})
            diff = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert diff == []


def test_existing_admin_becomes_a_system_administrator(db_url):
    """An installation from before identity keeps its admin, now ``system_admin``."""
    from sqlalchemy import text

    engine = make_engine(db_url)
    try:
        migrate.upgrade(engine, "0012")
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO users (id, username, password_hash, system_role, enabled, "
                    "created_at) VALUES ('u1', 'admin', 'x', 'admin', true, CURRENT_TIMESTAMP)"
                )
            )
        migrate.upgrade(engine)
        with engine.connect() as conn:
            row = conn.execute(
                text("SELECT system_role, failed_logins FROM users WHERE id = 'u1'")
            ).one()
    finally:
        engine.dispose()
    assert tuple(row) == ("system_admin", 0)
