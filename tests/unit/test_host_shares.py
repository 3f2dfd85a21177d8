"""Hosts shared out between controllers, on SQLite and on PostgreSQL: every host is
watched by exactly one controller at every round, each watches its fair share,
a controller that joins takes its share as the others hand theirs back, and the
hosts of one that dies are taken by the others once its lease passes (at most a
lease and a round unwatched)."""

from __future__ import annotations

import time
from collections import Counter
from datetime import timedelta

from sqlalchemy import delete, select, update

from nubis.db.models import Cluster, Controller, Host, utcnow
from nubis.db.session import Database
from nubis.services.inventory import topology
from nubis.tasks import heartbeats
from nubis.tasks.host_shares import HostShares
from nubis.tasks.leadership import Leadership

LEASE = timedelta(seconds=1)


class Ctl:
    """What the host shares of one controller need: its lease holder, its heartbeat."""

    def __init__(self, db: Database, name: str) -> None:
        self.db = db
        self.name = name
        self.shares = HostShares(db, Leadership(db, name, LEASE))

    def beat(self) -> None:
        """The engine's heartbeat: the controller row and every lease renewed."""
        with self.db.begin() as s:
            heartbeats.beat(s, self.name, "")
        self.shares.leadership.renew()

    def stop(self) -> None:
        """A clean stop: its leases handed back, its row gone."""
        self.shares.leadership.release()
        with self.db.begin() as s:
            s.execute(delete(Controller).where(Controller.id == self.name))


def add_hosts(db: Database, count: int, start: int = 0) -> list[str]:
    with db.begin() as s:
        topology.ensure_default(s)
        cluster_id = s.scalar(select(Cluster.id).where(Cluster.name == "default"))
        hosts = [
            Host(name=f"h{i}", uri=f"test:///default?h={i}", cluster_id=cluster_id)
            for i in range(start, start + count)
        ]
        s.add_all(hosts)
        s.flush()
        return [h.id for h in hosts]


def round_of(ctls: list[Ctl]) -> dict[str, list[str]]:
    """One tick of every controller (a heartbeat, a rebalance); who watches what."""
    for c in ctls:
        c.beat()
    for c in ctls:
        c.shares.rebalance()
    return {c.name: c.shares.owned() for c in ctls}


def settled(db: Database, ctls: list[Ctl]) -> dict[str, list[str]]:
    """Rounds until the shares stop changing (a host handed back in one round is
    taken in the next), every host watched at most once at each."""
    owned = round_of(ctls)
    for _ in range(3):
        watched_once(db, owned)
        owned, before = round_of(ctls), owned
        if owned == before:
            return owned
    raise AssertionError(f"the shares do not settle: {owned}")


def watched_once(db: Database, owned: dict[str, list[str]]) -> Counter[str]:
    counts = Counter(h for hosts in owned.values() for h in hosts)
    assert max(counts.values(), default=1) == 1, counts  # never by two
    with db.read() as s:
        assert set(counts) <= set(s.scalars(select(Host.id)))
    return counts


def test_hosts_are_shared_out_as_controllers_come_and_go(db):
    hosts = add_hosts(db, 10)
    a, b, c = Ctl(db, "ctl-a"), Ctl(db, "ctl-b"), Ctl(db, "ctl-c")

    owned = round_of([a])
    assert len(owned["ctl-a"]) == 10  # alone: every host

    # b joins: a hands half back, b takes it at its next tick; never a host twice
    owned = settled(db, [a, b])
    assert sorted(len(v) for v in owned.values()) == [5, 5]
    assert sorted(owned["ctl-a"] + owned["ctl-b"]) == sorted(hosts)

    # c joins: 4, 3, 3
    owned = settled(db, [a, b, c])
    assert sorted(len(v) for v in owned.values()) == [3, 3, 4]

    # b dies (no heartbeat, no renewal): its hosts are watched by nobody until its
    # lease passes, then by a and c
    orphans = set(owned["ctl-b"])
    died = time.monotonic()
    while True:
        owned = round_of([a, c])
        counts = watched_once(db, owned)
        if set(counts) == set(hosts):
            break
        assert time.monotonic() - died < LEASE.total_seconds() + 1, owned
        time.sleep(0.1)
    taken_after = time.monotonic() - died
    print(f"the dead controller's {len(orphans)} hosts were watched again {taken_after:.1f} s "
          f"after it stopped (lease {LEASE.total_seconds():.0f} s)")  # fmt: skip
    assert taken_after >= LEASE.total_seconds() * 0.9  # not before its lease passed
    assert sorted(len(v) for v in owned.values()) == [5, 5]
    b.shares.rebalance()  # b wakes up: its hosts are others' now; it takes none back
    watched_once(db, {**owned, "ctl-b": b.shares.owned()})

    # c stops cleanly: a takes its hosts at its next tick, no lease to wait for
    c.stop()
    owned = round_of([a])
    assert sorted(owned["ctl-a"]) == sorted(hosts)


def test_a_host_added_or_removed_changes_the_shares(db):
    hosts = add_hosts(db, 3)
    a, b = Ctl(db, "ctl-a"), Ctl(db, "ctl-b")
    owned = settled(db, [a, b])
    assert sorted(len(v) for v in owned.values()) == [1, 2]
    hosts += add_hosts(db, 1, start=3)
    owned = settled(db, [a, b])
    assert sorted(owned["ctl-a"] + owned["ctl-b"]) == sorted(hosts)
    assert [len(v) for v in owned.values()] == [2, 2]
    # a host removed: whoever watched it lets it go
    gone = owned["ctl-a"][0]
    with db.begin() as s:
        s.execute(delete(Host).where(Host.id == gone))
    owned = settled(db, [a, b])
    assert gone not in owned["ctl-a"] + owned["ctl-b"]
    assert sorted(owned["ctl-a"] + owned["ctl-b"]) == sorted(set(hosts) - {gone})


def test_a_controller_whose_heartbeat_is_late_keeps_its_hosts(db):
    """Counting live controllers by heartbeat: one that has not beaten for a while
    (but whose leases still stand) does not lose its hosts to a greedy newcomer."""
    add_hosts(db, 4)
    a, b = Ctl(db, "ctl-a"), Ctl(db, "ctl-b")
    owned = settled(db, [a, b])
    mine = owned["ctl-a"]
    with db.begin() as s:  # a's heartbeat is older than a lease: b counts it dead...
        s.execute(
            update(Controller)
            .where(Controller.id == "ctl-a")
            .values(heartbeat_at=utcnow() - 2 * LEASE)
        )
    b.shares.rebalance()  # ...and wants every host, but a's leases still stand
    assert not set(mine) & set(b.shares.owned())
