"""Login throttling per client address: after too many failed logins from one
address within a window, that address is refused for a while, before any password
is checked (so a flood of guesses costs the server no password hashing).

Failures are counted with one atomic upsert (``INSERT ... ON CONFLICT DO UPDATE``):
parallel attempts on PostgreSQL each add exactly one. The per-user lockout (the
password policy's ``max_failed_logins``) is in ``auth``; ``nubis server unlock``
clears both from the server itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import case, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from nubis.db.models import LoginThrottle, utcnow
from nubis.services.errors import TooManyRequests


@dataclass(frozen=True)
class ThrottleSettings:
    max_failures: int = 20  # failed logins from one address within the window
    window_seconds: float = 300.0
    block_seconds: float = 300.0


def address_key(address: str | None) -> str | None:
    return f"addr:{address[:72]}" if address else None


def check(session: Session, address: str | None, now: datetime | None = None) -> None:
    """Refuse (429) a login from an address that is blocked."""
    key = address_key(address)
    if key is None:
        return
    now = now or utcnow()
    until = session.scalar(select(LoginThrottle.blocked_until).where(LoginThrottle.key == key))
    if until is not None and until > now:
        wait = int((until - now).total_seconds()) + 1
        raise TooManyRequests(f"too many failed logins from this address: try again in {wait} s")


def count_failure(session: Session, address: str | None, rules: ThrottleSettings) -> None:
    """One more failed login from ``address``; the address is blocked at the limit."""
    key = address_key(address)
    if key is None:
        return
    now = utcnow()
    expired = LoginThrottle.window_start < now - timedelta(seconds=rules.window_seconds)
    insert = (postgresql if session.bind.dialect.name == "postgresql" else sqlite).insert
    stmt = insert(LoginThrottle).values(key=key, failures=1, window_start=now)
    stmt = stmt.on_conflict_do_update(
        index_elements=[LoginThrottle.key],
        set_={
            "failures": case((expired, 1), else_=LoginThrottle.failures + 1),
            "window_start": case((expired, now), else_=LoginThrottle.window_start),
        },
    ).returning(LoginThrottle.failures)
    failures = session.scalar(stmt) or 0
    if failures >= rules.max_failures:
        session.execute(
            update(LoginThrottle)
            .where(LoginThrottle.key == key)
            .values(
                failures=0,
                window_start=now,
                blocked_until=now + timedelta(seconds=rules.block_seconds),
            )
        )


def clear(session: Session, address: str | None = None) -> int:
    """Forget the failures and blocks of one address (or of every address)."""
    stmt = delete(LoginThrottle)
    if address is not None:
        stmt = stmt.where(LoginThrottle.key == address_key(address))
    return session.execute(stmt).rowcount or 0


def forget_old(session: Session, rules: ThrottleSettings) -> int:
    """Housekeeping: rows whose window and block are both over."""
    now = utcnow()
    return (
        session.execute(
            delete(LoginThrottle).where(
                LoginThrottle.window_start < now - timedelta(seconds=rules.window_seconds),
                (LoginThrottle.blocked_until.is_(None)) | (LoginThrottle.blocked_until < now),
            )
        ).rowcount
        or 0
    )
