"""Moving volumes between storage pools on the real local libvirtd: a volume attached
to a running guest is copied live (block copy, then pivot) while the guest goes on
running and reads its data from the new pool; the domain's definition names the new
file; a detached volume is copied offline; a live move cancelled half-way leaves the
volume where it was; bad moves are refused and change nothing.
(Moves into and out of Ceph RBD are in test_rbd.py.)"""

import os
import shutil
import subprocess
import tempfile
import time

import libvirt
import pytest

from nubis.drivers.libvirt.volumes import _disk_sources
from tests.integration.guest import guest_run, wait_uptime
from tests.integration.storage import attach, create_volume, detach, move, wait_guest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def other(server):
    """A second directory pool on the local host."""
    path = tempfile.mkdtemp(prefix="nubis-test-other-", dir="/var/tmp")
    os.chmod(path, 0o755)
    body = {"name": "other-dir", "kind": "dir", "path": path, "host": "local"}
    resp = server.client.post("/storage-pools", json=body)
    assert resp.status_code == 201, resp.text
    yield resp.json()
    assert server.client.delete("/storage-pools/other-dir").status_code == 204
    assert os.listdir(path) == []
    shutil.rmtree(path)


def volume_file(pool: dict, volume_id: str) -> str:
    """The volume's one file in the pool's directory (its name has a generation)."""
    (name,) = [n for n in os.listdir(pool["path"]) if n.startswith(f"nubis-vol-{volume_id}")]
    return os.path.join(pool["path"], name)


def definition_sources(instance_id: str) -> dict:
    conn = libvirt.open("qemu:///system")
    try:
        dom = conn.lookupByUUIDString(instance_id)
        return _disk_sources(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    finally:
        conn.close()


def test_bad_moves_are_refused_and_change_nothing(server, pool, other):
    vol = create_volume(server, name="stay", size_gib=1, pool="local-dir")
    cases = [
        ({"pool": "local-dir"}, 400, "already in storage pool"),
        ({"pool": "nope"}, 404, "storage pool 'nope' not found"),
        ({}, 422, "pool"),
    ]
    for body, status, fragment in cases:
        resp = server.client.post(f"/volumes/{vol['id']}/actions/migrate", json=body)
        assert resp.status_code == status, (body, resp.text)
        assert fragment in resp.text, resp.text
    resp = server.client.post("/volumes/nope/actions/migrate", json={"pool": "other-dir"})
    assert resp.status_code == 404
    # a volume with snapshots stays (its snapshots are files of its pool)
    resp = server.client.post(f"/volumes/{vol['id']}/snapshots", json={"name": "s1"})
    assert resp.status_code == 202, resp.text
    assert server.wait_task(resp.json()["task_id"])["status"] == "succeeded"
    resp = server.client.post(f"/volumes/{vol['id']}/actions/migrate", json={"pool": "other-dir"})
    assert resp.status_code == 409 and "has snapshots" in resp.text, resp.text
    after = server.client.get(f"/volumes/{vol['id']}").json()
    state = (after["pool_id"], after["status"], after["task_state"])
    assert state == (pool["id"], "available", None)
    resp = server.client.delete(f"/volumes/{vol['id']}/snapshots/s1")
    assert server.wait_task(resp.json()["task_id"])["status"] == "succeeded"
    resp = server.client.delete(f"/volumes/{vol['id']}")
    assert server.wait_task(resp.json()["task_id"])["status"] == "succeeded"


def test_a_running_guests_volume_moves_live_and_back_offline(server, pool, other, guest):
    iid = guest["id"]
    vol = create_volume(server, name="mover", size_gib=1, pool="local-dir", format="raw")
    att = attach(server, iid, vol["id"])
    assert wait_guest(server, iid, "cat /sys/block/vdb/serial", att["serial"]) == att["serial"]
    guest_run(server, iid, "printf NUBIS-MOVE-4242 > /dev/vdb; sync")
    before = wait_uptime(server, iid, 1)

    task = move(server, vol["id"], "other-dir")
    assert task["progress"] == 100
    moved = server.client.get(f"/volumes/{vol['id']}").json()
    state = (moved["pool_id"], moved["status"], moved["task_state"])
    assert state == (other["id"], "in-use", None)
    new_file = volume_file(other, moved["id"])
    assert os.listdir(pool["path"]) == []  # the old file is gone
    # the guest never stopped: its uptime goes on from where it was, and it reads its
    # data from the new file (its definition names that file too)
    assert wait_uptime(server, iid, before + 2) > before
    assert server.instance(iid)["status"] == "running"
    assert guest_run(server, iid, "head -c 15 /dev/vdb").strip() == "NUBIS-MOVE-4242"
    assert definition_sources(iid)[att["target"]] == new_file
    guest_run(server, iid, "printf NUBIS-BACK-4242 > /dev/vdb; sync")
    with open(new_file, "rb") as f:
        assert f.read(15) == b"NUBIS-BACK-4242"

    # detached, it moves back offline; attached again, the guest reads it
    detach(server, iid, vol["id"])
    move(server, vol["id"], "local-dir")
    back = server.client.get(f"/volumes/{vol['id']}").json()
    assert back["pool_id"] == pool["id"] and os.listdir(other["path"]) == []
    volume_file(pool, vol["id"])  # one file, in the pool it is back in
    attach(server, iid, vol["id"])
    wait_guest(server, iid, "cat /sys/block/vdb/serial", att["serial"])
    assert guest_run(server, iid, "head -c 15 /dev/vdb").strip() == "NUBIS-BACK-4242"
    detach(server, iid, vol["id"])
    resp = server.client.delete(f"/volumes/{vol['id']}")
    assert server.wait_task(resp.json()["task_id"])["status"] == "succeeded"


def test_a_live_move_cancelled_half_way_leaves_the_volume_where_it_was(server, pool, other, guest):
    iid = guest["id"]
    vol = create_volume(server, name="stayer", size_gib=1, pool="local-dir", format="raw")
    old_file = volume_file(pool, vol["id"])
    # data the copy must move (holes it would skip): 256 MiB at 8 MiB/s takes 32 s
    subprocess.run(
        ["qemu-io", "-f", "raw", "-c", "write -P 0x5a 1M 255M", old_file],
        check=True,
        capture_output=True,
    )
    att = attach(server, iid, vol["id"])
    wait_guest(server, iid, "cat /sys/block/vdb/serial", att["serial"])
    guest_run(server, iid, "printf NUBIS-STAY-4242 > /dev/vdb; sync")
    body = {"pool": "other-dir", "max_bandwidth_mib_s": 8}
    resp = server.client.post(f"/volumes/{vol['id']}/actions/migrate", json=body)
    assert resp.status_code == 202, resp.text
    task_id = resp.json()["task_id"]
    deadline = time.monotonic() + 60
    while server.client.get(f"/tasks/{task_id}").json()["progress"] <= 10:  # copying
        assert time.monotonic() < deadline, "the copy never reported progress"
        time.sleep(0.2)
    cancel = server.client.post(f"/tasks/{task_id}/actions/cancel")
    assert cancel.status_code == 202 and cancel.json()["cancel_requested"], cancel.text
    task = server.wait_task(task_id)
    assert (task["status"], task["error"]) == ("failed", "cancelled on request"), task

    # the guest stays on its disk, the new copy is gone, nothing is held
    after = server.client.get(f"/volumes/{vol['id']}").json()
    state = (after["pool_id"], after["status"], after["task_state"])
    assert state == (pool["id"], "in-use", None)
    assert os.listdir(other["path"]) == []
    assert definition_sources(iid)[att["target"]] == old_file
    assert server.instance(iid)["task_state"] is None
    assert guest_run(server, iid, "head -c 15 /dev/vdb").strip() == "NUBIS-STAY-4242"
    again = server.client.post(f"/tasks/{task_id}/actions/cancel")
    assert again.status_code == 409 and "has ended" in again.text
    detach(server, iid, vol["id"])
    resp = server.client.delete(f"/volumes/{vol['id']}")
    assert server.wait_task(resp.json()["task_id"])["status"] == "succeeded"
