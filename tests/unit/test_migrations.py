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
