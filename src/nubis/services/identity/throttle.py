"""Login throttling per client address: after too many failed logins from one
address within a window, that address is refused for a while, before any password
is checked and (once known) without reading the database: a flood of guesses
costs the server neither password hashing nor database writes.

Failures are counted with one atomic upsert (``INSERT ... ON CONFLICT DO UPDATE``):
parallel attempts on PostgreSQL each add exactly one. The per-user lockout (the
password policy's ``max_failed_logins``) is in ``auth``; ``nubis server unlock``
clears both from the server itself.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import case, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from nubis.db.models import AuditRecord, LoginThrottle, utcnow
from nubis.db.session import Database
from nubis.services.core.errors import TooManyRequests


@dataclass(frozen=True)
class ThrottleSettings:
    max_failures: int = 20  # failed logins from one address within the window
    window_seconds: float = 300.0
    block_seconds: float = 300.0


def address_key(address: str | None) -> str | None:
    return f"addr:{address[:72]}" if address else None


class AddressThrottle:
    """The rules, and a short memory of blocked addresses: a blocked address is
    refused without touching the database; what the memory holds is read again
    after ``RECHECK`` seconds, so a block lifted from the server (``nubis server
    unlock --address``) ends within that time."""

    RECHECK = 5.0
    MEMORY = 10_000  # addresses remembered at most (then forgotten, read again)

    def __init__(self, rules: ThrottleSettings | None = None) -> None:
        self.rules = rules or ThrottleSettings()
        self._known: dict[str, tuple[datetime | None, float]] = {}
        self._lock = threading.Lock()

    def _remember(self, key: str, until: datetime | None) -> None:
        with self._lock:
            if len(self._known) >= self.MEMORY:
                self._known.clear()
            self._known[key] = (until, time.monotonic())

    def blocked_for(self, address: str | None) -> float | None:
        """Seconds an address is still blocked for, from memory alone (no database):
        None when it is not known to be blocked or what is known is older than
        ``RECHECK`` (then ``check`` reads the database again)."""
        key = address_key(address)
        if key is None:
            return None
        with self._lock:
            known = self._known.get(key)
        if known is None or known[0] is None or time.monotonic() - known[1] >= self.RECHECK:
            return None
        left = (known[0] - utcnow()).total_seconds()
        return left if left > 0 else None

    def check(self, db: Database, address: str | None) -> None:
        """Refuse (429) a login from an address that is blocked."""
        key = address_key(address)
        if key is None:
            return
        with self._lock:
            known = self._known.get(key)
        if known is not None and time.monotonic() - known[1] < self.RECHECK:
            until = known[0]
        else:
            with db.read() as s:
                until = s.scalar(
                    select(LoginThrottle.blocked_until).where(LoginThrottle.key == key)
                )
            self._remember(key, until)
        now = utcnow()
        if until is not None and until > now:
            wait = int((until - now).total_seconds()) + 1
            raise TooManyRequests(
                f"too many failed logins from this address: try again in {wait} s"
            )

    def count_failure(self, session: Session, address: str | None) -> None:
        """One more failed login from ``address``; the address is blocked at the limit
        (and the block is in the audit log: the refused attempts that follow are not,
        one by one)."""
        key = address_key(address)
        if key is None or address is None:
            return
        rules = self.rules
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
        if failures < rules.max_failures:
            return
        until = now + timedelta(seconds=rules.block_seconds)
        session.execute(
            update(LoginThrottle)
            .where(LoginThrottle.key == key)
            .values(failures=0, window_start=now, blocked_until=until)
        )
        session.add(
            AuditRecord(
                action="login blocked",
                method="POST",
                path="/auth/tokens",
                resource_type="address",
                resource_id=address[:255],
                params={"failures": failures, "blocked_seconds": rules.block_seconds},
                source_ip=address[:64],
                success=False,
                status_code=429,
            )
        )
        self._remember(key, until)


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
