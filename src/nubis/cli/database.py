"""`nubis db`: the database itself, on the server (no API): move a deployment from
its embedded SQLite file onto PostgreSQL."""

from __future__ import annotations

from typing import Annotated

import typer
from sqlalchemy import make_url

from nubis.cli.client import console, fail
from nubis.config import get_settings
from nubis.db.transfer import TransferError, copy_database

app = typer.Typer(
    help="On the server itself: move the database to PostgreSQL", no_args_is_help=True
)


@app.command("migrate")
def migrate_database(
    to: Annotated[
        str,
        typer.Option(
            "--to", help="the empty target database, e.g. postgresql+psycopg://nubis:pw@db/nubis"
        ),
    ],
    source: Annotated[
        str | None,
        typer.Option("--from", help="default: this server's database (NUBIS_DATABASE_URL)"),
    ] = None,
) -> None:
    """Copy every row of this deployment's database into an empty one (its schema made
    by the migrations; each table's rows counted on both sides). Stop `nubis serve`
    first; then set NUBIS_DATABASE_URL to the new database and start it again."""
    try:
        counts = copy_database(source or get_settings().db_url, to)
    except TransferError as exc:
        raise fail(str(exc)) from None
    for table, rows in counts.items():
        if rows:
            console.print(f"{table}: {rows}")
    shown = make_url(to).render_as_string(hide_password=True)
    console.print(
        f"copied {sum(counts.values())} rows of {len(counts)} tables into {shown}; "
        "set NUBIS_DATABASE_URL to it and start nubis serve"
    )
