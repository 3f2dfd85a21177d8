"""Domain events as the state sync applies them: a burst is applied in one
transaction, an instance takes the last state its host reported, and an instance that
is busy or lives on another host is left alone."""

from __future__ import annotations

from sqlalchemy import event, select, update

from nubis.db.models import Host, Instance, InstanceStatus
from nubis.db.models.monitoring import Event
from nubis.drivers.libvirt.connection import DomainEvent

URI = "test:///default"


def idle_instance(client, name: str) -> str:
    resp = client.post(
        "/api/v1/instances", json={"name": name, "image": "tiny", "flavor": "m1.tiny"}
    )
    assert resp.status_code == 202, resp.text
    return resp.json()["id"]


def settle(platform, instance_id: str, status: str, task_state: str | None = None) -> None:
    with platform.db.begin() as s:
        s.execute(
            update(Instance)
            .where(Instance.id == instance_id)
            .values(status=status, task_state=task_state)
        )


def status_of(platform, instance_id: str) -> str:
    with platform.db.read() as s:
        return s.scalar(select(Instance.status).where(Instance.id == instance_id))


def watch_the_hosts(platform) -> None:
    """Take this controller's share of the hosts now (they were added after it
    started): it applies only the events of hosts it watches."""
    assert platform.sync.shares is not None
    platform.sync.shares.rebalance()


def state_events(platform, instance_id: str) -> list[str]:
    with platform.db.read() as s:
        return list(
            s.scalars(
                select(Event.message)
                .where(Event.kind == "instance.state", Event.resource_id == instance_id)
                .order_by(Event.created_at)
            )
        )


def test_a_burst_of_events_is_one_transaction_and_the_last_state_counts(tiny_world, platform):
    bursty, busy, elsewhere, quiet = (
        idle_instance(tiny_world, name) for name in ("bursty", "busy", "elsewhere", "quiet")
    )
    for iid in (bursty, elsewhere, quiet):
        settle(platform, iid, InstanceStatus.RUNNING)
    settle(platform, busy, InstanceStatus.RUNNING, task_state="stopping")
    with platform.db.begin() as s:  # "elsewhere" lives on another host now
        other = Host(name="other", uri="test:///other", cluster_id=None)
        s.add(other)
        s.flush()
        s.execute(update(Instance).where(Instance.id == elsewhere).values(host_id=other.id))

    watch_the_hosts(platform)

    def reported(iid: str, state: str) -> DomainEvent:
        return DomainEvent(URI, iid, f"nubis-{iid}", state)

    batch: list[DomainEvent | str | None] = [
        reported(bursty, InstanceStatus.STOPPED),
        reported(busy, InstanceStatus.STOPPED),
        reported(bursty, InstanceStatus.RUNNING),
        reported(elsewhere, InstanceStatus.STOPPED),
        reported(bursty, InstanceStatus.PAUSED),
        reported(quiet, InstanceStatus.RUNNING),
    ]
    commits: list[int] = []

    def count(_conn: object) -> None:
        commits.append(1)

    event.listen(platform.db.engine, "commit", count)
    try:
        platform.sync._apply_batch(batch)
    finally:
        event.remove(platform.db.engine, "commit", count)
    assert len(commits) == 1
    assert status_of(platform, bursty) == InstanceStatus.PAUSED
    assert state_events(platform, bursty) == ["instance bursty is now paused (reported by libvirt)"]
    assert status_of(platform, busy) == InstanceStatus.RUNNING  # its task decides
    assert status_of(platform, elsewhere) == InstanceStatus.RUNNING  # not that host's
    assert state_events(platform, quiet) == []  # no change, no event


def test_a_crash_handed_to_ha_is_not_applied(tiny_world, platform):
    crashed, later = idle_instance(tiny_world, "crashed"), idle_instance(tiny_world, "later")
    for iid in (crashed, later):
        settle(platform, iid, InstanceStatus.RUNNING)
    watch_the_hosts(platform)
    handed: list[str] = []
    platform.sync.on_crash = lambda iid, _uri: handed.append(iid) or iid == crashed
    platform.sync._apply_batch(
        [
            DomainEvent(URI, crashed, "x", InstanceStatus.STOPPED, crashed=True),
            DomainEvent(URI, later, "y", InstanceStatus.STOPPED, crashed=True),
        ]
    )
    assert handed == [crashed, later]
    assert status_of(platform, crashed) == InstanceStatus.RUNNING  # HA restarts it
    assert status_of(platform, later) == InstanceStatus.STOPPED  # HA declined it
