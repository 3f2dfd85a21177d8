"""The devcluster: real libvirtd hosts in mount namespaces, registered in Nubis."""

import os
import subprocess
import time

import libvirt
import pytest

from nubis.devcluster.hosts import alive
from tests.integration.server import READY, NubisServer, running_devcluster
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with running_devcluster(tmp_path_factory.mktemp("devcluster"), 2) as c:
        yield c


@pytest.fixture(scope="module")
def srv(cluster, tmp_path_factory):
    s = NubisServer(
        tmp_path_factory.mktemp("nubis-dc") / "data",
        NUBIS_RECONCILE_INTERVAL_SECONDS="2",
        NUBIS_METRICS_INTERVAL_SECONDS="2",
        NUBIS_HOST_DOWN_AFTER_SECONDS="3",
        NUBIS_HA_CHECK_INTERVAL_SECONDS="1",
    ).start()
    yield s
    s.stop()


def wait_host(srv, name: str, state: str) -> dict:
    return srv.wait_field(f"/hosts/{name}", "state", state)


def wait_alarm(srv, alarm_id: str, state: str) -> dict:
    return srv.wait_field(f"/alarms/{alarm_id}", "state", state)


def test_hosts_are_separate_libvirtds_sharing_one_disk_directory(cluster, srv):
    for host in cluster.hosts():
        resp = srv.client.post("/hosts", json={"name": host.name, "uri": host.uri})
        assert resp.status_code == 201, resp.text
        assert resp.json()["state"] == "up"
    # every host has its own libvirtd process and mount namespace, none is ours
    namespaces = {h.namespace() for h in cluster.hosts()}
    assert len(namespaces) == 2 and os.readlink("/proc/self/ns/mnt") not in namespaces

    created = srv.client.post(
        "/instances",
        json={"name": "on-dev2", "image": "nubis-tiny", "flavor": "m1.tiny", "host": "dev-2"},
    ).json()
    assert srv.wait_task(created["task_id"])["status"] == "succeeded"
    iid = created["id"]
    assert READY in srv.wait_console(iid)
    assert (cluster.shared / f"nubis-{iid}-root").exists()  # on the shared storage
    conn = libvirt.open(cluster.host("dev-2").uri)
    assert conn.lookupByUUIDString(iid).isActive() == 1
    conn.close()
    conn = libvirt.open(cluster.host("dev-1").uri)
    with pytest.raises(libvirt.libvirtError):
        conn.lookupByUUIDString(iid)  # dev-1 does not know it
    conn.close()

    # a host crash: Nubis sees the host go down and raises its host-down alarm;
    # after a reboot the alarm clears and the guest is off
    # the receiver is on loopback (not a host's address): the administrator allows it
    allow = srv.client.put("/webhook-allowlist", json={"networks": ["127.0.0.1/32"]})
    assert allow.status_code == 200, allow.text
    with Receiver() as hook:
        rule = {"name": "dev2-down", "resource_type": "host", "resource": "dev-2"}
        rule.update(metric="host_down", duration_seconds=1, webhook_url=hook.url)
        made = srv.client.post("/alarms", json=rule)
        assert made.status_code == 201, made.text
        alarm_id = made.json()["id"]
        wait_alarm(srv, alarm_id, "ok")
        cluster.host("dev-2").kill()
        assert cluster.host("dev-2").processes() == []
        wait_host(srv, "dev-2", "down")
        wait_alarm(srv, alarm_id, "alarm")
        cluster.host("dev-2").start(cluster.shared)
        wait_host(srv, "dev-2", "up")
        wait_alarm(srv, alarm_id, "ok")
        deadline = time.monotonic() + 20
        while len(hook.received) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        states = [(h["json"]["previous_state"], h["json"]["state"]) for h in hook.received]
        assert states == [("ok", "alarm"), ("alarm", "ok")]
        assert srv.client.delete(f"/alarms/{alarm_id}").status_code == 204
    srv.wait_status(iid, "stopped", timeout=30)
    srv.act(iid, "start")
    assert srv.wait_console(iid, 2)

    resp = srv.client.delete(f"/instances/{iid}")
    assert srv.wait_task(resp.json()["task_id"])["status"] == "succeeded"
    assert not (cluster.shared / f"nubis-{iid}-root").exists()


def test_down_leaves_no_process_mount_or_listener(cluster, srv):
    srv.stop()  # removes its images from the hosts while they are up
    hosts = cluster.hosts()
    pids = [pid for h in hosts for pid in h.processes()]
    assert pids  # libvirtd, virtlogd and the guests of both hosts
    cluster.down(purge=True)
    assert not cluster.base.exists()
    assert [p for p in pids if alive(p)] == []
    mounts = subprocess.run(["findmnt", "-rn", "-o", "TARGET"], capture_output=True, text=True)
    assert str(cluster.base) not in mounts.stdout
    for host in hosts:
        with pytest.raises(libvirt.libvirtError):
            libvirt.open(host.uri)
