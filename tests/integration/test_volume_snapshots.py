"""Volume snapshots with a real guest: taken while the guest runs and writes (its disk
frozen for the copy, then merged back), reverted, cloned into new volumes, a long
series deleted in any order, secure delete of snapshot copies, and a control plane
killed while the disk is frozen."""

import os
import tempfile
import xml.etree.ElementTree as ET

import libvirt
import pytest

from tests.integration.guest import guest_run
from tests.integration.server import NubisServer, libvirt_leftovers
from tests.integration.storage import attach, create_volume, detach, wait_guest

pytestmark = pytest.mark.integration


def snapshot(server, volume_id: str, name: str) -> dict:
    resp = server.client.post(f"/volumes/{volume_id}/snapshots", json={"name": name})
    assert resp.status_code == 202, resp.text
    task = server.wait_task(resp.json()["task_id"])
    assert task["status"] == "succeeded", task["error"]
    return server.client.get(f"/volumes/{volume_id}/snapshots/{name}").json()


def run_task(server, method: str, path: str, **kw) -> None:
    resp = server.client.request(method, path, **kw)
    assert resp.status_code == 202, resp.text
    task = server.wait_task(resp.json()["task_id"])
    assert task["status"] == "succeeded", task["error"]


def remove_volume(server, volume_id: str) -> None:
    run_task(server, "DELETE", f"/volumes/{volume_id}")
    assert libvirt_leftovers(volume_id) == []


def disk_of(instance_id: str, target: str, inactive: bool = False) -> ET.Element:
    conn = libvirt.open("qemu:///system")
    try:
        dom = conn.lookupByUUIDString(instance_id)
        xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0)
    finally:
        conn.close()
    for disk in ET.fromstring(xml).findall("./devices/disk"):
        if disk.find("target").get("dev") == target:
            return disk
    raise AssertionError(f"no disk {target}")


def files(pool: dict, volume_id: str) -> list[str]:
    return sorted(f for f in os.listdir(pool["path"]) if volume_id in f)


def mark(server, iid: str, dev: str, text: str) -> None:
    guest_run(server, iid, f"printf {text} > /dev/{dev}; sync")


def read(server, iid: str, dev: str, n: int = 6) -> str:
    return guest_run(server, iid, f"head -c {n} /dev/{dev}").strip()


def mount(server, iid: str, dev: str, mkfs: bool = False) -> None:
    """The volume's file system on /mnt/<dev> in the guest (made first if asked)."""
    make = f"mke2fs -q /dev/{dev} && " if mkfs else ""
    out = guest_run(
        server, iid, f"{make}mkdir -p /mnt/{dev} && mount /dev/{dev} /mnt/{dev} && echo OK"
    )
    assert out.strip().endswith("OK"), out


def write_file(server, iid: str, dev: str, text: str) -> None:
    guest_run(server, iid, f"echo {text} > /mnt/{dev}/marker && sync")


def read_file(server, iid: str, dev: str) -> str:
    return guest_run(server, iid, f"cat /mnt/{dev}/marker").strip()


def test_live_snapshots_revert_and_clone(server, pool, guest):
    iid = guest["id"]
    vol = create_volume(server, name="snapped", size_gib=1, pool="local-dir")
    att = attach(server, iid, vol["id"])
    dev = att["target"]
    wait_guest(server, iid, f"cat /sys/block/{dev}/serial", att["serial"])
    # a file system on the volume, and a series of snapshots taken while the guest
    # runs with it mounted, each after a new marker file
    mount(server, iid, dev, mkfs=True)
    for i in range(1, 6):
        write_file(server, iid, dev, f"MARK-{i}")
        taken = snapshot(server, vol["id"], f"s{i}")
        assert (taken["status"], taken["live_instance_id"]) == ("available", iid)
        assert taken["size_gib"] == 1
    # the guest ran on, on its own disk again: no overlay in its chain or in the pool
    disk = disk_of(iid, dev)
    assert disk.find("source").get("file").endswith(f"nubis-vol-{vol['id']}.qcow2")
    assert disk.find("backingStore/source") is None
    assert disk_of(iid, dev, inactive=True).find("source").get("file") == disk.find("source").get(
        "file"
    )
    assert not [f for f in os.listdir(pool["path"]) if "overlay" in f]
    assert server.instance(iid)["status"] == "running"
    assert server.instance(iid)["task_state"] is None
    write_file(server, iid, dev, "MARK-X")
    names = [s["name"] for s in server.client.get(f"/volumes/{vol['id']}/snapshots").json()]
    assert names == ["s1", "s2", "s3", "s4", "s5"]

    # refusals change nothing
    for body, status in [({"name": "s2"}, 409), ({"name": "b a d"}, 400)]:
        resp = server.client.post(f"/volumes/{vol['id']}/snapshots", json=body)
        assert resp.status_code == status, resp.text
    assert server.client.post("/volumes/nope/snapshots", json={"name": "x"}).status_code == 404
    resp = server.client.post(f"/volumes/{vol['id']}/snapshots/s2/actions/revert")
    assert resp.status_code == 409 and "not stopped" in resp.text
    resp = server.client.post(f"/volumes/{vol['id']}/snapshots/zz/actions/revert")
    assert resp.status_code == 404
    resp = server.client.delete(f"/volumes/{vol['id']}")
    assert resp.status_code == 409
    assert read_file(server, iid, dev) == "MARK-X"

    # a new volume from a snapshot holds its data; the snapshot is not consumed
    clone = create_volume(server, name="from-s3", snapshot="s3")
    assert (clone["size_gib"], clone["format"]) == (1, "qcow2")
    catt = attach(server, iid, clone["id"])
    wait_guest(server, iid, f"cat /sys/block/{catt['target']}/serial", catt["serial"])
    mount(server, iid, catt["target"])
    assert read_file(server, iid, catt["target"]) == "MARK-3"
    guest_run(server, iid, f"umount /mnt/{catt['target']}")
    resp = server.client.post("/volumes", json={"name": "c2", "snapshot": "s3", "size_gib": 0})
    assert resp.status_code == 400
    detach(server, iid, clone["id"])
    remove_volume(server, clone["id"])

    # revert: the stopped guest boots on the snapshot's data, the old file is gone
    guest_run(server, iid, f"umount /mnt/{dev}")
    server.act(iid, "stop")
    before = files(pool, vol["id"])
    run_task(server, "POST", f"/volumes/{vol['id']}/snapshots/s2/actions/revert")
    after = files(pool, vol["id"])
    assert f"nubis-vol-{vol['id']}.qcow2" in before and f"nubis-vol-{vol['id']}.g1.qcow2" in after
    assert f"nubis-vol-{vol['id']}.qcow2" not in after
    server.act(iid, "start")
    server.wait_console(iid, count=server.console(iid).count("NUBIS-GUEST-READY") + 1)
    wait_guest(server, iid, f"cat /sys/block/{dev}/serial", att["serial"])
    mount(server, iid, dev)
    assert read_file(server, iid, dev) == "MARK-2"
    guest_run(server, iid, f"umount /mnt/{dev}")
    # deleting in any order leaves the others whole
    for name in ("s3", "s1", "s5"):
        run_task(server, "DELETE", f"/volumes/{vol['id']}/snapshots/{name}")
    server.act(iid, "stop")
    run_task(server, "POST", f"/volumes/{vol['id']}/snapshots/s4/actions/revert")
    server.act(iid, "start")
    server.wait_console(iid, count=server.console(iid).count("NUBIS-GUEST-READY") + 1)
    wait_guest(server, iid, f"cat /sys/block/{dev}/serial", att["serial"])
    mount(server, iid, dev)
    assert read_file(server, iid, dev) == "MARK-4"
    guest_run(server, iid, f"umount /mnt/{dev}")
    for name in ("s2", "s4"):
        run_task(server, "DELETE", f"/volumes/{vol['id']}/snapshots/{name}")
    assert server.client.get(f"/volumes/{vol['id']}/snapshots").json() == []
    detach(server, iid, vol["id"])
    remove_volume(server, vol["id"])
    assert files(pool, vol["id"]) == []


def test_detached_volume_snapshot_and_secure_delete(server, pool, guest):
    """A detached volume is copied as it is; the copies of a secure-delete volume are
    overwritten before they go."""
    iid = guest["id"]
    vol = create_volume(
        server, name="secret", size_gib=1, pool="local-dir", format="raw", secure_delete=True
    )
    att = attach(server, iid, vol["id"])
    wait_guest(server, iid, f"cat /sys/block/{att['target']}/serial", att["serial"])
    secret = f"SECRET-{vol['id'][:8]}"
    mark(server, iid, att["target"], secret)
    detach(server, iid, vol["id"])
    taken = snapshot(server, vol["id"], "cold")
    assert taken["live_instance_id"] is None
    path = os.path.join(pool["path"], f"nubis-vsnap-{taken['id']}.qcow2")
    with open(path, "rb") as fh:
        assert secret.encode() in fh.read()
        run_task(server, "DELETE", f"/volumes/{vol['id']}/snapshots/cold")
        assert not os.path.exists(path)
        fh.seek(0)
        assert secret.encode() not in fh.read()
    remove_volume(server, vol["id"])


@pytest.fixture
def fresh(tmp_path):
    srv = NubisServer(tmp_path / "data", NUBIS_RECONCILE_INTERVAL_SECONDS="600")
    yield srv
    srv.stop()


def test_killed_while_the_disk_is_frozen_finishes_after_restart(fresh):
    fresh.start(NUBIS_FAULT_INJECT="volume.snapshot:merge")
    # QEMU, as its own user, must reach the volume: not under pytest's private tmp
    path = tempfile.mkdtemp(prefix="nubis-test-pool-", dir="/var/tmp")
    os.chmod(path, 0o755)
    resp = fresh.client.post(
        "/storage-pools", json={"name": "p", "kind": "dir", "path": path, "host": "local"}
    )
    assert resp.status_code == 201, resp.text
    resp = fresh.client.post(
        "/instances", json={"name": "frozen", "image": "nubis-tiny", "flavor": "m1.tiny"}
    )
    iid = resp.json()["id"]
    assert fresh.wait_task(resp.json()["task_id"])["status"] == "succeeded"
    fresh.wait_console(iid)
    vol = create_volume(fresh, name="v", size_gib=1, pool="p")
    att = attach(fresh, iid, vol["id"])
    dev = att["target"]
    wait_guest(fresh, iid, f"cat /sys/block/{dev}/serial", att["serial"])
    mark(fresh, iid, dev, "BEFORE")
    resp = fresh.client.post(f"/volumes/{vol['id']}/snapshots", json={"name": "s"})
    assert resp.status_code == 202
    assert fresh.wait_exit() == 137  # died with the guest writing into the overlay
    assert "overlay" in disk_of(iid, dev).find("source").get("file")
    fresh.start(NUBIS_FAULT_INJECT="")
    task = fresh.wait_task(resp.json()["task_id"])
    assert task["status"] == "succeeded" and task["attempts"] == 2, task
    assert disk_of(iid, dev).find("source").get("file").endswith(f"{vol['id']}.qcow2")
    assert not [f for f in os.listdir(path) if "overlay" in f]
    mark(fresh, iid, dev, "AFTER!")
    fresh.act(iid, "stop")
    run_task(fresh, "POST", f"/volumes/{vol['id']}/snapshots/s/actions/revert")
    fresh.act(iid, "start")
    fresh.wait_console(iid, count=2)
    wait_guest(fresh, iid, f"cat /sys/block/{dev}/serial", att["serial"])
    assert read(fresh, iid, dev) == "BEFORE"
    run_task(fresh, "DELETE", f"/volumes/{vol['id']}/snapshots/s")
    detach(fresh, iid, vol["id"])
    remove_volume(fresh, vol["id"])
    run_task(fresh, "DELETE", f"/instances/{iid}")
    assert libvirt_leftovers(iid) == []
    assert os.listdir(path) == []
    assert fresh.client.delete("/storage-pools/p").status_code == 204
    os.rmdir(path)
