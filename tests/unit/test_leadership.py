"""Work that runs on one controller at a time: a lease one controller takes, keeps
while it renews it, hands back when it stops, and loses to another once it passes,
on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

from nubis.db.session import Database
from nubis.tasks.leadership import Leadership

LEASE = timedelta(seconds=1)


def controllers(db: Database, *names: str) -> list[Leadership]:
    return [Leadership(db, name, LEASE) for name in names]


def test_one_controller_holds_a_lease_until_it_passes_then_another_takes_it(db):
    a, b = controllers(db, "ctl-a", "ctl-b")
    assert a.hold("ha-monitor") and not b.hold("ha-monitor")
    assert b.hold("metrics")  # another lease is another matter
    for _ in range(3):  # renewed (by their heartbeats): each keeps its lease past its end
        time.sleep(0.4)
        a.renew()
        b.renew()
        assert not b.hold("ha-monitor")
    assert a.holders() == {"ha-monitor": "ctl-a", "metrics": "ctl-b"}
    time.sleep(1.1)  # a stopped renewing, as a dead controller does
    assert b.hold("ha-monitor")
    assert not a.hold("ha-monitor")  # a woke up: the work is b's now
    a.renew()
    assert a.holders() == {"ha-monitor": "ctl-b"}  # b's metrics lease has passed too


def test_a_controller_that_stops_hands_its_leases_back_at_once(db):
    a, b = controllers(db, "ctl-a", "ctl-b")
    assert a.hold("housekeeping") and a.hold("metering")
    a.release()
    assert b.hold("housekeeping") and b.hold("metering")
    assert not a.hold("housekeeping")


def test_a_lease_lost_meanwhile_is_not_renewed(db):
    a, b = controllers(db, "ctl-a", "ctl-b")
    assert a.hold("notifier")
    time.sleep(1.1)  # a was cut off from the database for longer than the lease
    assert b.hold("notifier")
    a.renew()  # a's heartbeat comes back: it does not take the lease back
    assert a.holders() == {"notifier": "ctl-b"} and not a.hold("notifier")


def test_of_many_controllers_asking_at_once_one_holds_the_lease(db):
    many = controllers(db, *(f"ctl-{i}" for i in range(8)))
    start = threading.Barrier(len(many))
    won: list[str] = []

    def ask(ctl: Leadership) -> None:
        start.wait()
        if ctl.hold("ha-monitor"):
            won.append(ctl.holder)

    threads = [threading.Thread(target=ask, args=(c,)) for c in many]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and many[0].holders() == {"ha-monitor": won[0]}
