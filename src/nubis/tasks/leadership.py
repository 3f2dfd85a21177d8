"""Leadership: work that must run on one controller at a time (the HA monitor, the
metrics collector, metering, housekeeping, the notifier), when several controllers
share the database.

Each such loop asks ``hold(name)`` at the start of every round and runs the round
only when it is True. The first controller to ask takes the lease ``name`` (a row in
``leases``: its holder and until when); its task engine renews every lease it holds
while it lives (``renew``, with the task leases), so it keeps the work. When it dies
its leases pass and the next controller to ask takes the work over; when it stops
cleanly it hands them back at once (``release``). Taking a lease is a
compare-and-swap on its holder and expiry, so two controllers never both hold one.
With one controller (SQLite) it always holds every lease: everything runs as before.

The same leases share the hosts out (``tasks/host_shares.py``): ``take`` several at
once, ``let_go`` some, ``held`` those of one kind.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Collection
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.exc import IntegrityError

from nubis.db.models import Lease, utcnow
from nubis.db.session import Database, changed_one

log = logging.getLogger(__name__)


class Leadership:
    def __init__(self, db: Database, holder: str, lease: timedelta) -> None:
        self.db = db
        self.holder = holder
        self.lease = lease
        self._held: dict[str, datetime] = {}  # name -> until when it is surely ours
        self._lock = threading.Lock()

    def hold(self, name: str) -> bool:
        """Take or keep the lease ``name``: True if this controller holds it now. A
        lease held for more than half its length yet is not asked for again."""
        now = utcnow()
        with self._lock:
            until = self._held.get(name)
        if until is not None and until - now > self.lease / 2:
            return True
        until = now + self.lease
        with self.db.begin() as s:
            won = changed_one(
                s,
                update(Lease)
                .where(Lease.name == name, or_(Lease.holder == self.holder, Lease.until < now))
                .values(holder=self.holder, until=until),
            )
            if not won and s.get(Lease, name) is None:
                try:
                    with s.begin_nested():
                        s.add(Lease(name=name, holder=self.holder, until=until))
                    won = True
                except IntegrityError:  # another controller made it first
                    won = False
        with self._lock:
            if won:
                if name not in self._held:
                    log.info("this controller now runs %s", name)
                self._held[name] = until
            elif self._held.pop(name, None) is not None:
                log.warning("another controller took %s over", name)
        return won

    def gate(self, name: str) -> Callable[[], bool]:
        """``hold(name)`` as a function a loop calls each round."""
        return lambda: self.hold(name)

    def renew(self) -> None:
        """Extend every lease this controller holds (its engine's heartbeat); one
        another controller took meanwhile (this one lost the database for longer
        than the lease) is no longer held."""
        with self._lock:
            held = set(self._held)
        if not held:
            return
        until = utcnow() + self.lease
        with self.db.begin() as s:
            s.execute(
                update(Lease)
                .where(Lease.name.in_(held), Lease.holder == self.holder)
                .values(until=until)
            )
            kept = set(
                s.scalars(
                    select(Lease.name).where(Lease.name.in_(held), Lease.holder == self.holder)
                )
            )
        with self._lock:
            for name in held:
                if name in kept and name in self._held:
                    self._held[name] = until
                elif self._held.pop(name, None) is not None:
                    log.warning("another controller took %s over", name)

    def take(self, names: Collection[str], limit: int, reclaim: bool = False) -> set[str]:
        """Take up to ``limit`` of the leases ``names`` that nobody holds (never made,
        or passed), in random order so that controllers asking at once mostly ask for
        different ones; those taken. Each is a compare-and-swap as in ``hold``. With
        ``reclaim``, also those this controller's previous life held (its id on a
        lease it does not hold now)."""
        if limit <= 0 or not names:
            return set()
        now = utcnow()
        until = now + self.lease
        with self._lock:
            mine = set(self._held)
        with self.db.begin() as s:
            known = {
                name: (holder, ends)
                for name, holder, ends in s.execute(
                    select(Lease.name, Lease.holder, Lease.until).where(Lease.name.in_(list(names)))
                )
            }

            def free(name: str) -> bool:
                if name not in known:
                    return True
                holder, ends = known[name]
                return ends < now or (reclaim and holder == self.holder and name not in mine)

            unheld = [n for n in names if free(n)]
            chosen = random.sample(unheld, min(limit, len(unheld)))
            passed = [n for n in chosen if n in known]
            taken: set[str] = set()
            if passed:
                gone = Lease.until < now
                if reclaim:
                    gone = or_(gone, Lease.holder == self.holder)
                s.execute(
                    update(Lease)
                    .where(Lease.name.in_(passed), gone)
                    .values(holder=self.holder, until=until)
                )
                taken |= set(
                    s.scalars(
                        select(Lease.name).where(
                            Lease.name.in_(passed), Lease.holder == self.holder
                        )
                    )
                )
            for name in chosen:
                if name in known:
                    continue
                try:
                    with s.begin_nested():
                        s.add(Lease(name=name, holder=self.holder, until=until))
                    taken.add(name)
                except IntegrityError:  # another controller made it first
                    pass
        with self._lock:
            for name in names:
                if name in taken:
                    self._held[name] = until
                elif name in self._held and self._held[name] <= now:
                    del self._held[name]  # it passed, and another controller has it
        return taken

    def held(self, prefix: str) -> set[str]:
        """The leases named ``prefix...`` this controller surely holds: renewed, and
        not passed since (one that passed may be another's now: ``take`` it again)."""
        now = utcnow()
        with self._lock:
            return {n for n, until in self._held.items() if n.startswith(prefix) and until > now}

    def let_go(self, names: Collection[str], forget: bool = False) -> None:
        """Hand the leases ``names`` back: the next controller to ask takes them.
        With ``forget`` their rows go (the work they stood for is over)."""
        with self._lock:
            for name in names:
                self._held.pop(name, None)
        if not names:
            return
        with self.db.begin() as s:
            mine = and_(Lease.name.in_(list(names)), Lease.holder == self.holder)
            if forget:
                s.execute(delete(Lease).where(mine))
            else:
                s.execute(update(Lease).where(mine).values(until=utcnow()))

    def release(self) -> None:
        """Hand every lease back (a clean stop): another controller takes the work
        at its next round instead of after the lease."""
        with self._lock:
            held = set(self._held)
        self.let_go(held)

    def holders(self) -> dict[str, str]:
        """Who holds each lease that has not passed: name -> controller id."""
        with self.db.read() as s:
            rows = s.execute(select(Lease.name, Lease.holder).where(Lease.until >= utcnow()))
            return {name: holder for name, holder in rows}
