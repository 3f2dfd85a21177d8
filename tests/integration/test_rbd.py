"""Ceph RBD pools against a real one-node Ceph cluster (tests/integration/ceph.py):
a pool registered with a cephx user that may use one Ceph pool only; bad monitors,
keys and pools refused with nothing left behind; a volume that is an RBD image,
opened by QEMU through librbd, hot-plugged into a running guest that writes and
reads it, kept across detach and attach, grown online, and gone from Ceph when
deleted."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import libvirt
import pytest

from tests.integration.ceph import POOL, USER, CephCluster, free_port
from tests.integration.guest import guest_run
from tests.integration.storage import attach, create_volume, detach, wait_guest

pytestmark = pytest.mark.integration

GIB = 1024**3


@pytest.fixture(scope="module")
def ceph(tmp_path_factory) -> Iterator[CephCluster]:
    cluster = CephCluster(tmp_path_factory.mktemp("ceph"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def rbd_body(ceph: CephCluster, **changes) -> dict:
    body = {
        "name": "ceph",
        "kind": "rbd",
        "path": POOL,
        "cluster": "default",
        "monitors": [ceph.monitor],
        "auth_user": USER,
        "auth_key": ceph.user_key,
    }
    return {**body, **changes}


def libvirt_storage() -> tuple[list[str], list[str]]:
    """Nubis's libvirt pools and Ceph secrets on this host."""
    conn = libvirt.open("qemu:///system")
    try:
        pools = [p for p in conn.listAllStoragePools() if p.name().startswith("nubis-pool-")]
        secrets = [s.usageID() for s in conn.listAllSecrets()]
        return [p.name() for p in pools], [s for s in secrets if s.startswith("nubis-pool-")]
    finally:
        conn.close()


def test_bad_pools_are_refused_and_leave_nothing(server, ceph):
    before = libvirt_storage()
    other_key = subprocess.run(
        ["ceph-authtool", "--gen-print-key"], capture_output=True, text=True, check=True
    ).stdout.strip()
    cases = [
        # checked before any host is asked
        (rbd_body(ceph, monitors=[]), "monitors"),
        (rbd_body(ceph, monitors=["127.0.0.1:99999"]), "monitor"),
        (rbd_body(ceph, auth_key="bm90IGEga2V5"), "auth_key"),
        (rbd_body(ceph, auth_user=None), "auth_user"),
        (rbd_body(ceph, path="bad/pool"), "Ceph pool"),
        (rbd_body(ceph, host="local", cluster=None), "cluster"),
        # the hosts cannot use it: refused by Ceph through libvirt
        (rbd_body(ceph, auth_key=other_key), "cannot use the pool"),
        (rbd_body(ceph, path="no-such-pool"), "cannot use the pool"),
        (rbd_body(ceph, monitors=[f"127.0.0.1:{free_port()}"]), "cannot use the pool"),
    ]
    for body, fragment in cases:
        resp = server.client.post("/storage-pools", json=body)
        assert resp.status_code == 400, (body, resp.text)
        assert fragment in resp.json()["error"]["message"], resp.text
        assert server.client.get("/storage-pools/ceph").status_code == 404
        assert libvirt_storage() == before, body  # no pool, no secret left on the host


def test_rbd_volume_in_a_running_guest(server, ceph, guest):
    made = server.client.post("/storage-pools", json=rbd_body(ceph))
    assert made.status_code == 201, made.text
    pool = made.json()
    assert pool["state"] == "active" and pool["capacity_bytes"] > 0
    assert pool["monitors"] == [ceph.monitor] and "auth_key" not in pool
    # the key is a libvirt secret whose value cannot be read back through the API
    pools, secrets = libvirt_storage()
    assert f"nubis-pool-{pool['id'][:8]}" in secrets

    # RBD images are raw; what needs files is refused
    resp = server.client.post(
        "/volumes", json={"name": "q", "size_gib": 1, "pool": "ceph", "format": "qcow2"}
    )
    assert resp.status_code == 400 and "raw" in resp.text
    vol = create_volume(server, name="rbd1", size_gib=1, pool="ceph")
    assert vol["format"] == "raw" and vol["status"] == "available"
    assert ceph.images() == [f"nubis-vol-{vol['id']}.img"]
    resp = server.client.post(f"/volumes/{vol['id']}/snapshots", json={"name": "s"})
    assert resp.status_code == 400 and "not available" in resp.text, resp.text

    iid = guest["id"]
    att = attach(server, iid, vol["id"])
    assert wait_guest(server, iid, "cat /sys/block/vdb/serial", att["serial"]) == att["serial"]
    assert guest_run(server, iid, "cat /sys/block/vdb/size").strip() == str(GIB // 512)
    guest_run(server, iid, "printf NUBIS-RBD-4242 > /dev/vdb; sync")
    detach(server, iid, vol["id"])
    assert wait_guest(server, iid, "ls /sys/block | grep -c vdb", "0") == "0"
    # the bytes are in Ceph: read them with Ceph's own tool
    head = subprocess.run(
        ["rbd", "-c", str(ceph.conf), "export", f"{POOL}/nubis-vol-{vol['id']}.img", "-"],
        capture_output=True,
        check=True,
    ).stdout[:14]
    assert head == b"NUBIS-RBD-4242"

    attach(server, iid, vol["id"])
    wait_guest(server, iid, "cat /sys/block/vdb/serial", att["serial"])
    assert guest_run(server, iid, "head -c 14 /dev/vdb").strip() == "NUBIS-RBD-4242"
    resp = server.client.post(f"/volumes/{vol['id']}/actions/extend", json={"size_gib": 2})
    assert resp.status_code == 202, resp.text
    assert server.wait_task(resp.json()["task_id"])["status"] == "succeeded"
    assert wait_guest(server, iid, "cat /sys/block/vdb/size", str(2 * GIB // 512)) == str(
        2 * GIB // 512
    )
    detach(server, iid, vol["id"])

    # a pool with volumes stays; deleted, the image leaves Ceph, then the pool goes
    assert server.client.delete("/storage-pools/ceph").status_code == 409
    resp = server.client.delete(f"/volumes/{vol['id']}")
    assert server.wait_task(resp.json()["task_id"])["status"] == "succeeded"
    assert ceph.images() == []
    assert server.client.delete("/storage-pools/ceph").status_code == 204
    pools, secrets = libvirt_storage()
    assert f"nubis-pool-{pool['id'][:8]}" not in pools + secrets
