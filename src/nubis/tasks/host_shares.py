"""Hosts shared out between the controllers: each host's libvirt events and its
reconciliation are handled by one controller, the one holding the lease
``host:<id>`` (``Leadership``, renewed with the task leases by the engine's
heartbeat).

Every controller runs ``rebalance`` each tick: it counts the live controllers
(heartbeat within one lease), keeps at most its fair share of the hosts
(``fair_share``: 4, 3 and 3 of 10 hosts), hands back the rest, and takes free hosts (never
leased, handed back, or whose holder died: its lease passed) up to that share. A
controller that joins takes its share as the others hand theirs back; one that
dies stops counting as live when its leases pass, and the others take its hosts
at their next tick. A host is never held by two controllers (the lease is a
compare-and-swap), and is held by none for at most a lease and a tick.
"""

from __future__ import annotations

import threading

from sqlalchemy import select

from nubis.db.models import Controller, Host
from nubis.db.session import Database
from nubis.tasks import heartbeats
from nubis.tasks.leadership import Leadership

PREFIX = "host:"


def fair_share(hosts: int, controllers: list[str], me: str) -> int:
    """How many of ``hosts`` the controller ``me`` watches: as many as every other,
    the first ones (by id) one more while the hosts do not divide evenly."""
    each, extra = divmod(hosts, len(controllers))
    return each + (1 if controllers.index(me) < extra else 0)


class HostShares:
    def __init__(self, db: Database, leadership: Leadership) -> None:
        self.db = db
        self.leadership = leadership
        self._owned: set[str] = set()  # the hosts (ids) watched here
        self._uris: set[str] = set()  # and their URIs
        self._lock = threading.Lock()

    def rebalance(self) -> tuple[list[str], list[str]]:
        """One round: keep this controller's share of the hosts, hand back the rest,
        take free ones up to the share. The hosts (ids) gained and those lost."""
        me = self.leadership.holder
        with self.db.read() as s:
            hosts: dict[str, str] = {h: uri for h, uri in s.execute(select(Host.id, Host.uri))}
            live = set(
                s.scalars(
                    select(Controller.id).where(
                        Controller.heartbeat_at >= heartbeats.alive_since(self.leadership.lease)
                    )
                )
            )
        share = fair_share(len(hosts), sorted(live | {me}), me)
        held = {name.removeprefix(PREFIX) for name in self.leadership.held(PREFIX)}
        kept = sorted(held & hosts.keys())
        self.leadership.let_go([PREFIX + h for h in held - hosts.keys()], forget=True)
        self.leadership.let_go([PREFIX + h for h in kept[share:]])
        kept = kept[:share]
        wanted = [PREFIX + h for h in hosts if h not in held]
        taken = self.leadership.take(wanted, share - len(kept))
        now = set(kept) | {name.removeprefix(PREFIX) for name in taken}
        with self._lock:
            before = self._owned
            self._owned = now
            self._uris = {hosts[h] for h in now}
        return sorted(now - before), sorted(before - now)

    def owned(self) -> list[str]:
        """The hosts (ids) this controller watches."""
        with self._lock:
            return sorted(self._owned)

    def owns_uri(self, uri: str) -> bool:
        with self._lock:
            return uri in self._uris
