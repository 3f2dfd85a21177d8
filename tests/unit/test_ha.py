"""High availability's decisions on libvirt's test driver: a blip is not a failure, a
held lease keeps a host's VMs where they are, a failed fence restarts nothing, a host
with no proof restarts nothing; the API refuses bad HA input and changes nothing;
the HA reserve; the restart limit."""

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from nubis.db.models import Cluster, Host, Task, utcnow
from nubis.db.models.monitoring import Event
from nubis.drivers.leases import lease_held, lease_name
from nubis.services.compute.instance_tasks import root_volume_name
from nubis.services.core import events
from nubis.services.ha.recovery import RESTARTED, RestartLimit
from nubis.services.scheduler import NoValidHost, PlacementRequest


def host_row(platform, name: str = "fake") -> Host:
    with platform.db.begin() as s:
        host = s.scalar(select(Host).where(Host.name == name))
        s.expunge(host)
        return host


def events_of(platform, kind: str) -> list[Event]:
    with platform.db.begin() as s:
        found = list(s.scalars(select(Event).where(Event.kind == kind)))
        s.expunge_all()
        return found


def ha_instance(client, name: str = "vm-ha") -> str:
    resp = client.post(
        "/api/v1/instances",
        json={"name": name, "image": "tiny", "flavor": "m1.tiny", "ha": True},
    )
    assert resp.status_code == 202, resp.text
    return resp.json()["id"]


def age(platform, host_id: str, seconds: float) -> None:
    with platform.db.begin() as s:
        s.execute(
            update(Host)
            .where(Host.id == host_id)
            .values(unreachable_since=utcnow() - timedelta(seconds=seconds))
        )


def fail_for(platform, host_id: str, seconds: float) -> None:
    """The host fails two checks, has been failing for ``seconds``, and fails again."""
    platform.ha.observe(host_id, "gone")
    platform.ha.observe(host_id, "gone")
    age(platform, host_id, seconds)
    platform.ha.observe(host_id, "gone")


def failover_tasks(platform) -> list[Task]:
    with platform.db.begin() as s:
        found = list(s.scalars(select(Task).where(Task.kind == "host.failover")))
        s.expunge_all()
        return found


def test_a_blip_is_not_a_failure(platform):
    host = host_row(platform)
    monitor = platform.ha
    monitor.observe(host.id, "no answer within 5 s")  # once, under load: not yet
    assert host_row(platform).state == "up"
    monitor.observe(host.id, None)
    monitor.observe(host.id, "connection reset")  # the count starts again
    assert host_row(platform).state == "up"
    monitor.observe(host.id, "connection reset")
    assert host_row(platform).state == "unreachable"
    assert [e.kind for e in events_of(platform, "host.unreachable")] == ["host.unreachable"]
    monitor.observe(host.id, "connection reset")  # well inside the 20 s
    assert host_row(platform).state == "unreachable"
    monitor.observe(host.id, None)
    back = host_row(platform)
    assert back.state == "up" and back.unreachable_since is None
    assert len(events_of(platform, "host.up")) == 1


def test_without_fence_or_lockspace_the_host_is_down_but_nothing_restarts(tiny_world, platform):
    ha_instance(tiny_world)
    host = host_row(platform)
    fail_for(platform, host.id, 60)
    assert host_row(platform).state == "down"
    (down,) = events_of(platform, "host.down")
    assert "evacuate it once you know it is off" in down.message
    assert failover_tasks(platform) == []


HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.lockf(fd, fcntl.LOCK_EX, 1, 0)
print("held", flush=True)
time.sleep(60)
"""


@contextmanager
def holding(lease: Path) -> Iterator[None]:
    """Another process holds the lease, as virtlockd does for a running QEMU."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(lease)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"held"
        yield
    finally:
        holder.kill()
        holder.wait()


def test_a_held_lease_keeps_the_host_and_its_vms(tiny_world, platform, tmp_path):
    lockspace = tmp_path / "locks"
    lockspace.mkdir()
    resp = tiny_world.patch("/api/v1/clusters/default", json={"ha_lockspace": str(lockspace)})
    assert resp.status_code == 200, resp.text
    iid = ha_instance(tiny_world)
    lease = lockspace / lease_name(str(platform.settings.pool_path / root_volume_name(iid)))
    host = host_row(platform)
    with holding(lease):
        fail_for(platform, host.id, 60)
        assert host_row(platform).state == "unreachable"
        (isolated,) = events_of(platform, "host.isolated")
        assert "1 instance(s) still hold their disk leases" in isolated.message
        assert failover_tasks(platform) == []
    # the QEMU process is gone (its lease free): the host is judged dead
    platform.ha.observe(host.id, "gone")
    assert host_row(platform).state == "down"
    (task,) = failover_tasks(platform)
    assert task.resource_id == host.id and task.status == "queued"


def test_no_failover_without_a_majority_of_the_cluster(tiny_world, platform):
    ha_instance(tiny_world)
    with platform.db.begin() as s:
        cluster_id = s.scalar(select(Cluster.id).where(Cluster.name == "default"))
        s.execute(update(Host).values(cluster_id=cluster_id))
        for i in (2, 3):  # two more hosts of the cluster, one of them silent too
            state = "unreachable" if i == 2 else "up"
            s.add(
                Host(name=f"h{i}", uri=f"test:///default?h={i}", cluster_id=cluster_id, state=state)
            )
    host = host_row(platform)
    fail_for(platform, host.id, 60)
    assert host_row(platform).state == "unreachable"
    (held,) = events_of(platform, "host.no_quorum")
    assert "2 of 3 hosts of its cluster are not answering" in held.message
    assert failover_tasks(platform) == []


def test_a_failed_fence_restarts_nothing(tiny_world, platform, tmp_path):
    resp = tiny_world.patch("/api/v1/clusters/default", json={"ha_lockspace": str(tmp_path)})
    assert resp.status_code == 200
    ha_instance(tiny_world)
    fencing = {"method": "devcluster", "host": "dev-1", "base": str(tmp_path / "nowhere")}
    assert tiny_world.put("/api/v1/hosts/fake/fencing", json=fencing).status_code == 200
    host = host_row(platform)
    fail_for(platform, host.id, 60)
    assert host_row(platform).state == "unreachable"
    (failed,) = events_of(platform, "host.fence_failed")
    assert "no devcluster host named 'dev-1'" in failed.message
    assert failover_tasks(platform) == []


def test_bad_ha_input_is_refused_and_changes_nothing(tiny_world, platform):
    iid = ha_instance(tiny_world)
    resp = tiny_world.put(f"/api/v1/instances/{iid}/ha", json={"enabled": False, "priority": 5000})
    assert resp.status_code == 400 and "ha_priority" in resp.json()["error"]["message"]
    shown = tiny_world.get(f"/api/v1/instances/{iid}").json()
    assert shown["ha_enabled"] is True and shown["ha_priority"] == 0
    ok = tiny_world.put(f"/api/v1/instances/{iid}/ha", json={"enabled": True, "priority": 700})
    assert ok.status_code == 200 and ok.json()["ha_priority"] == 700

    for body, words in (
        ({"method": "telepathy"}, "fence method must be one of"),
        ({"method": "ipmi", "address": "10.0.0.5", "username": "root"}, "needs password"),
        ({"method": "devcluster", "host": "node-1", "base": "/x"}, "needs host"),
    ):
        resp = tiny_world.put("/api/v1/hosts/fake/fencing", json=body)
        assert resp.status_code == 400 and words in resp.json()["error"]["message"], resp.text
    host = tiny_world.get("/api/v1/hosts/fake").json()
    assert host["fence_method"] == "none"
    ipmi = {"method": "ipmi", "address": "10.0.0.5", "username": "root", "password": "s3cret"}
    shown = tiny_world.put("/api/v1/hosts/fake/fencing", json=ipmi).json()
    assert shown["fence_method"] == "ipmi" and "s3cret" not in str(shown)

    resp = tiny_world.patch("/api/v1/clusters/default", json={"ha_lockspace": "relative/dir"})
    assert resp.status_code == 400
    assert tiny_world.get("/api/v1/clusters/default").json()["ha_lockspace"] is None


def test_the_ha_reserve_keeps_room_for_the_largest_host(platform):
    scheduler = platform.scheduler
    with platform.db.begin() as s:
        cluster = s.scalar(select(Cluster).where(Cluster.name == "default"))
        cluster.ha_reserve = True
        cluster.cpu_ratio = 1.0
        cluster.disable_threshold = 1.0
        for host in s.scalars(select(Host)):
            host.cluster_id = cluster.id
        s.add(
            Host(
                name="twin",
                uri="test:///default?twin",
                cluster_id=cluster.id,
                state="up",
                cpus=host.cpus,
                memory_mib=host.memory_mib,
                disk_gib=host.disk_gib,
            )
        )
        cpus = host.cpus
    # two equal hosts: everything must fit on one of them
    request = PlacementRequest(vcpus=cpus, memory_mib=1, disk_gib=0, keep_ha_reserve=True)
    with platform.db.begin() as s:
        scheduler.place(s, request)
    with pytest.raises(NoValidHost, match="HA reserve"), platform.db.begin() as s:
        scheduler.place(
            s, PlacementRequest(vcpus=1, memory_mib=1, disk_gib=0, keep_ha_reserve=True)
        )
    # the refusal changed nothing; a restart after a failure may use the reserve
    with platform.db.begin() as s:
        assert sum(h.alloc_vcpus for h in s.scalars(select(Host))) == cpus
        scheduler.place(s, PlacementRequest(vcpus=1, memory_mib=1, disk_gib=0))
        assert sum(h.alloc_vcpus for h in s.scalars(select(Host))) == cpus + 1


def test_restarts_are_limited_per_window(platform):
    limit = RestartLimit(max_restarts=2, window_seconds=60)
    with platform.db.begin() as s:
        assert not limit.exceeded(s, "i-1")
        for _ in range(2):
            events.record(s, RESTARTED, "restarted", "instance", "i-1")
        events.record(s, RESTARTED, "restarted", "instance", "i-2")
    with platform.db.begin() as s:
        assert limit.exceeded(s, "i-1") and not limit.exceeded(s, "i-2")
        s.execute(
            update(Event)
            .where(Event.resource_id == "i-1")
            .values(created_at=utcnow() - timedelta(seconds=120))
        )
    with platform.db.begin() as s:
        assert not limit.exceeded(s, "i-1")  # older than the window


def test_a_lease_is_held_only_while_its_holder_lives(tmp_path):
    disk = "/var/lib/libvirt/nubis/disks/nubis-x-root"
    assert not lease_held(tmp_path, disk)  # no lease file: nobody has the disk
    path = tmp_path / lease_name(disk)
    with holding(path):
        assert lease_held(tmp_path, disk)
        assert lease_held(tmp_path, disk)  # probing did not take it away
    deadline = time.monotonic() + 5
    while lease_held(tmp_path, disk) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not lease_held(tmp_path, disk)
    assert Path(path).exists()  # a left-over file without a lock is free
