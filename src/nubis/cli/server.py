"""`nubis server`: commands run on the server itself, as root, with its data directory
and database (no API, no login): the way back in when the API keeps someone out."""

from __future__ import annotations

from typing import Annotated

import typer

from nubis.cli.client import console, fail
from nubis.config import get_settings
from nubis.db.models import User
from nubis.db.session import Database
from nubis.services.core.errors import ServiceError
from nubis.services.identity import approvals, directory, throttle

app = typer.Typer(
    help="On the server itself (as root): unlock accounts, approve requests", no_args_is_help=True
)


def _database() -> Database:
    return Database(get_settings().db_url)


@app.command()
def unlock(
    username: Annotated[str | None, typer.Argument(help="the account to unlock")] = None,
    address: Annotated[
        str | None, typer.Option(help="also let this client address log in again")
    ] = None,
    all_addresses: Annotated[
        bool, typer.Option("--all-addresses", help="let every blocked address in again")
    ] = False,
) -> None:
    """Lift an account's lockout (and address blocks) from the server: a flood of
    wrong passwords cannot keep an administrator out for good."""
    if username is None and address is None and not all_addresses:
        raise fail("give a user name, --address or --all-addresses")
    db = _database()
    try:
        with db.begin() as s:
            if username is not None:
                try:
                    user: User = directory.get_user(s, username)
                except ServiceError as exc:
                    raise fail(exc.message) from exc
                directory.unlock(user)
            cleared = 0
            if address is not None or all_addresses:
                cleared = throttle.clear(s, None if all_addresses else address)
    finally:
        db.dispose()
    if username is not None:
        console.print(f"{username}: unlocked")
    if address is not None or all_addresses:
        console.print(f"address blocks lifted: {cleared}")


@app.command("approvals")
def list_approvals() -> None:
    """Requests waiting for a second security administrator."""
    db = _database()
    try:
        with db.read() as s:
            for row in approvals.pending(s):
                user = s.get(User, row.user_id)
                name = user.username if user else row.user_id
                role = f" -> {row.system_role}" if row.system_role else ""
                console.print(f"{row.id}  {row.kind} of {name}{role}, by {row.requested_by_name}")
    finally:
        db.dispose()


@app.command()
def approve(approval_id: str) -> None:
    """Approve a request as the second person (where there is no second security
    administrator): it is applied now."""
    db = _database()
    try:
        with db.begin() as s:
            try:
                row = approvals.approve(s, approval_id, None)
            except ServiceError as exc:
                raise fail(exc.message) from exc
            kind = row.kind
    finally:
        db.dispose()
    console.print(f"approved: {kind}")


@app.command()
def fingerprint() -> None:
    """The SHA-256 fingerprint of the server's TLS certificate (what `nubis login
    --fingerprint` checks on another machine)."""
    from nubis import tls

    settings = get_settings()
    cert = settings.tls_cert_file or settings.data_dir / "tls" / "cert.pem"
    if not cert.exists():
        raise fail(f"{cert} does not exist yet: nubis serve makes it on its first start")
    console.print(tls.fingerprint(cert.read_bytes()), soft_wrap=True, highlight=False)
