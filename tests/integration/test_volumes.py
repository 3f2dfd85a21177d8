"""Storage pools and data volumes on the real local libvirtd, with a real guest:
hot-plug seen in /sys/block, data written by the guest kept across detach/attach,
online extend, secure delete, a volume holding an image's disk, and bad input refused
with nothing changed."""

import hashlib
import os
import subprocess

import pytest

from tests.integration.guest import guest_run
from tests.integration.server import libvirt_leftovers
from tests.integration.storage import attach, create_volume, detach, volume_file, wait_guest

pytestmark = pytest.mark.integration
GIB = 1024**3


def test_bad_input_is_refused_and_changes_nothing(server, pool, guest):
    before = server.client.get("/volumes").json()["total"]
    cases = [
        ({"name": "v", "size_gib": -1, "pool": "local-dir"}, 400, "size_gib"),
        ({"name": "v", "size_gib": 0, "pool": "local-dir"}, 400, "size_gib"),
        ({"name": "v", "size_gib": 10**9, "pool": "local-dir"}, 400, "size_gib"),
        ({"name": "v", "size_gib": 1, "pool": "local-dir", "format": "vmdk"}, 400, "format"),
        (
            {"name": "v", "size_gib": 1, "pool": "local-dir", "provisioning": "thick"},
            400,
            "thick (eager-zeroed) volumes are raw",
        ),
        ({"name": "v", "size_gib": 1, "pool": "nope"}, 404, "storage pool 'nope' not found"),
        ({"name": "bad name!", "size_gib": 1, "pool": "local-dir"}, 400, "volume name"),
        ({"name": "v", "pool": "local-dir"}, 400, "size_gib is required"),
        ({"name": "v", "pool": "local-dir", "image": "nope"}, 404, "image 'nope' not found"),
        (
            {"name": "v", "pool": "local-dir", "image": "nubis-tiny", "format": "raw"},
            400,
            "keeps its format (qcow2)",
        ),
        (
            {"name": "v", "pool": "local-dir", "image": "nubis-tiny", "snapshot": "s"},
            400,
            "a snapshot or an image",
        ),
        (
            {"name": "v", "pool": "local-dir", "image": "nubis-tiny", "provisioning": "thick"},
            400,
            "thin-provisioned",
        ),
    ]
    for body, status, fragment in cases:
        resp = server.client.post("/volumes", json=body)
        assert resp.status_code == status, (body, resp.text)
        assert fragment in resp.json()["error"]["message"], resp.text
    assert server.client.get("/volumes").json()["total"] == before
    # pools: wrong scope, relative path, unknown kind
    for body, fragment in [
        ({"name": "p", "kind": "dir", "path": "/tmp/x", "cluster": "default"}, "one host"),
        ({"name": "p", "kind": "dir", "path": "rel/dir", "host": "local"}, "absolute"),
        ({"name": "p", "kind": "tape", "path": "/tmp/x", "host": "local"}, "kind must be"),
    ]:
        resp = server.client.post("/storage-pools", json=body)
        assert resp.status_code == 400 and fragment in resp.text, resp.text
    assert server.client.get("/storage-pools/p").status_code == 404
    # attaching to an instance that does not exist
    vol = create_volume(server, name="orphan-check", size_gib=1, pool="local-dir")
    resp = server.client.post("/instances/no-such-vm/volumes", json={"volume": vol["id"]})
    assert resp.status_code == 404
    assert server.client.get(f"/volumes/{vol['id']}").json()["status"] == "available"
    resp = server.client.delete(f"/volumes/{vol['id']}")
    assert server.wait_task(resp.json()["task_id"])["status"] == "succeeded"


def test_hot_plug_data_survives_detach_and_grows_online(server, pool, guest):
    iid = guest["id"]
    vol = create_volume(server, name="data1", size_gib=1, pool="local-dir")
    assert vol["status"] == "available" and vol["provisioning"] == "thin"
    att = attach(server, iid, vol["id"])
    assert att["target"] == "vdb"
    # the guest sees the disk, with the volume's serial, at the size asked for
    assert wait_guest(server, iid, "cat /sys/block/vdb/serial", att["serial"]) == att["serial"]
    assert guest_run(server, iid, "cat /sys/block/vdb/size").strip() == str(GIB // 512)
    assert server.client.get(f"/volumes/{vol['id']}").json()["status"] == "in-use"
    # deleting an attached volume is refused, and changes nothing
    resp = server.client.delete(f"/volumes/{vol['id']}")
    assert resp.status_code == 409 and "detach it first" in resp.text
    # the guest writes a marker onto the raw disk
    guest_run(server, iid, "printf NUBIS-MARK-4242 > /dev/vdb; sync")
    detach(server, iid, vol["id"])
    assert wait_guest(server, iid, "ls /sys/block | grep -c vdb", "0") == "0"
    assert server.client.get(f"/volumes/{vol['id']}").json()["status"] == "available"
    # attached again, the data is there
    attach(server, iid, vol["id"])
    wait_guest(server, iid, "cat /sys/block/vdb/serial", att["serial"])
    assert guest_run(server, iid, "head -c 15 /dev/vdb").strip() == "NUBIS-MARK-4242"
    # online extend: the guest sees 2 GiB without a reboot
    resp = server.client.post(f"/volumes/{vol['id']}/actions/extend", json={"size_gib": 2})
    assert resp.status_code == 202, resp.text
    assert server.wait_task(resp.json()["task_id"])["status"] == "succeeded"
    assert wait_guest(server, iid, "cat /sys/block/vdb/size", str(2 * GIB // 512)) == str(
        2 * GIB // 512
    )
    assert server.client.get(f"/volumes/{vol['id']}").json()["size_gib"] == 2
    for body, fragment in [({"size_gib": 1}, "never shrink"), ({"size_gib": -3}, "size_gib")]:
        resp = server.client.post(f"/volumes/{vol['id']}/actions/extend", json=body)
        assert resp.status_code == 400 and fragment in resp.text
    detach(server, iid, vol["id"])
    resp = server.client.delete(f"/volumes/{vol['id']}")
    assert server.wait_task(resp.json()["task_id"])["status"] == "succeeded"
    assert server.client.get(f"/volumes/{vol['id']}").status_code == 404
    assert libvirt_leftovers(vol["id"]) == []


@pytest.mark.parametrize("secure", [True, False], ids=["secure", "plain"])
def test_secure_delete_leaves_no_bytes_behind(server, pool, guest, secure):
    iid = guest["id"]
    vol = create_volume(
        server, name=f"wipe-{secure}", size_gib=1, pool="local-dir", secure_delete=secure
    )
    att = attach(server, iid, vol["id"])
    wait_guest(server, iid, f"cat /sys/block/{att['target']}/serial", att["serial"])
    marker = f"SECRET-{vol['id'][:8]}"
    guest_run(server, iid, f"printf {marker} > /dev/{att['target']}; sync")
    detach(server, iid, vol["id"])
    # keep the file open: after it is unlinked its blocks can still be read through it
    with open(volume_file(pool, vol), "rb") as fh:
        assert marker.encode() in fh.read()
        resp = server.client.delete(f"/volumes/{vol['id']}")
        assert server.wait_task(resp.json()["task_id"])["status"] == "succeeded"
        assert not os.path.exists(volume_file(pool, vol))
        fh.seek(0)
        left = fh.read()
    # secure: the old bytes were overwritten before removal; plain: they were not
    assert (marker.encode() in left) is not secure


def test_thick_volumes_are_allocated_up_front(server, pool):
    thin = create_volume(server, name="thin", size_gib=1, pool="local-dir", format="raw")
    lazy = create_volume(
        server,
        name="lazy",
        size_gib=1,
        pool="local-dir",
        format="raw",
        provisioning="thick-lazy-zeroed",
    )
    eager = create_volume(
        server, name="eager", size_gib=1, pool="local-dir", format="raw", provisioning="thick"
    )
    blocks = {v["name"]: os.stat(volume_file(pool, v)).st_blocks * 512 for v in (thin, lazy, eager)}
    assert blocks["thin"] < 1024 * 1024
    assert blocks["lazy"] >= GIB and blocks["eager"] >= GIB
    for v in (thin, lazy, eager):
        resp = server.client.delete(f"/volumes/{v['id']}")
        assert server.wait_task(resp.json()["task_id"])["status"] == "succeeded"


def test_nonpersistent_disk_forgets_at_power_off_persistent_keeps(server, pool, guest):
    iid = guest["id"]
    server.act(iid, "stop")
    kept = create_volume(server, name="kept", size_gib=1, pool="local-dir")
    gone = create_volume(server, name="gone", size_gib=1, pool="local-dir")
    targets = {}
    for vol, mode in ((kept, "persistent"), (gone, "nonpersistent")):
        resp = server.client.post(
            f"/instances/{iid}/volumes", json={"volume": vol["id"], "mode": mode}
        )
        assert resp.status_code == 202, resp.text
        task = server.wait_task(resp.json()["task_id"])
        assert task["status"] == "succeeded", task["error"]
        targets[vol["name"]] = resp.json()["target"]
    server.act(iid, "start")
    server.wait_console(iid, count=2)
    # a nonpersistent disk is not hot-plugged: its overlay is made at start
    hot = create_volume(server, name="hot", size_gib=1, pool="local-dir")
    resp = server.client.post(
        f"/instances/{iid}/volumes", json={"volume": hot["id"], "mode": "nonpersistent"}
    )
    assert resp.status_code == 400 and "stopped instance" in resp.text
    assert server.client.get(f"/volumes/{hot['id']}").json()["status"] == "available"
    resp = server.client.delete(f"/volumes/{hot['id']}")
    assert server.wait_task(resp.json()["task_id"])["status"] == "succeeded"
    for name, target in targets.items():
        guest_run(server, iid, f"printf WRITTEN-{name} > /dev/{target}; sync")
        assert guest_run(server, iid, f"head -c 12 /dev/{target}").strip().startswith("WRITTEN-")
    server.act(iid, "stop")  # power off
    server.act(iid, "start")
    server.wait_console(iid, count=3)
    assert guest_run(server, iid, f"head -c 12 /dev/{targets['kept']}").strip() == "WRITTEN-kept"
    assert "WRITTEN" not in guest_run(server, iid, f"head -c 12 /dev/{targets['gone']} | od -c")
    for vol in (kept, gone):
        detach(server, iid, vol["id"])
        resp = server.client.delete(f"/volumes/{vol['id']}")
        assert server.wait_task(resp.json()["task_id"])["status"] == "succeeded"


def snap(server, iid: str, name: str) -> dict:
    resp = server.client.post(f"/instances/{iid}/snapshots", json={"name": name})
    assert resp.status_code == 202, resp.text
    task = server.wait_task(resp.json()["task_id"])
    assert task["status"] == "succeeded", task["error"]
    return server.client.get(f"/instances/{iid}/snapshots/{name}").json()


def snap_action(server, iid: str, name: str, method: str, path: str = "") -> None:
    resp = server.client.request(method, f"/instances/{iid}/snapshots/{name}{path}")
    assert resp.status_code == 202, resp.text
    task = server.wait_task(resp.json()["task_id"])
    assert task["status"] == "succeeded", task["error"]


def test_snapshots_revert_the_guests_data(server, pool, guest):
    iid = guest["id"]
    vol = create_volume(server, name="snapped", size_gib=1, pool="local-dir")
    att = attach(server, iid, vol["id"])
    dev = f"/dev/{att['target']}"
    wait_guest(server, iid, f"cat /sys/block/{att['target']}/serial", att["serial"])
    # a chain of five snapshots of the running guest, each after a new marker
    for i in range(1, 6):
        guest_run(server, iid, f"printf MARK-{i} > {dev}; sync")
        taken = snap(server, iid, f"s{i}")
        assert taken["memory"] is True and taken["volume_ids"] == [vol["id"]]
    guest_run(server, iid, f"printf MARK-X > {dev}; sync")
    names = [x["name"] for x in server.client.get(f"/instances/{iid}/snapshots").json()]
    assert names == ["s1", "s2", "s3", "s4", "s5"]
    # back to s2: the guest runs on from that moment and reads what it had written
    snap_action(server, iid, "s2", "POST", "/actions/revert")
    assert server.instance(iid)["status"] == "running"
    assert guest_run(server, iid, f"head -c 6 {dev}").strip() == "MARK-2"
    # deleting snapshots in the middle and at the end leaves the others usable
    for name in ("s3", "s1", "s5"):
        snap_action(server, iid, name, "DELETE")
    snap_action(server, iid, "s4", "POST", "/actions/revert")
    assert guest_run(server, iid, f"head -c 6 {dev}").strip() == "MARK-4"
    # a stopped instance is snapshotted without memory, and reverted stays stopped
    server.act(iid, "stop")
    cold = snap(server, iid, "cold")
    assert cold["memory"] is False
    server.act(iid, "start")
    server.wait_console(iid, count=server.console(iid).count("NUBIS-GUEST-READY") + 1)
    guest_run(server, iid, f"printf MARK-Y > {dev}; sync")
    server.act(iid, "stop")
    snap_action(server, iid, "cold", "POST", "/actions/revert")
    assert server.instance(iid)["status"] == "stopped"
    server.act(iid, "start")
    server.wait_console(iid, count=server.console(iid).count("NUBIS-GUEST-READY") + 1)
    assert guest_run(server, iid, f"head -c 6 {dev}").strip() == "MARK-4"
    # bad input and refusals change nothing
    assert server.client.post(f"/instances/{iid}/snapshots", json={"name": "s2"}).status_code == 409
    assert (
        server.client.post(f"/instances/{iid}/snapshots", json={"name": "b a d"}).status_code == 400
    )
    assert server.client.post(f"/instances/{iid}/snapshots/nope/actions/revert").status_code == 404
    raw = create_volume(server, name="rawdisk", size_gib=1, pool="local-dir", format="raw")
    attach(server, iid, raw["id"])
    resp = server.client.post(f"/instances/{iid}/snapshots", json={"name": "with-raw"})
    assert resp.status_code == 400 and "raw" in resp.text
    resp = server.client.post(f"/instances/{iid}/snapshots/s2/actions/revert")
    assert resp.status_code == 409 and "other volumes attached" in resp.text
    assert server.instance(iid)["task_state"] is None
    detach(server, iid, raw["id"])
    # a volume the snapshots include stays attached until they are deleted
    resp = server.client.delete(f"/instances/{iid}/volumes/{vol['id']}")
    assert resp.status_code == 409 and "delete them before detaching" in resp.text
    for name in ("s2", "s4", "cold"):
        snap_action(server, iid, name, "DELETE")
    assert server.client.get(f"/instances/{iid}/snapshots").json() == []
    for v in (raw, vol):
        if v is vol:
            detach(server, iid, v["id"])
        resp = server.client.delete(f"/volumes/{v['id']}")
        assert server.wait_task(resp.json()["task_id"])["status"] == "succeeded"


def image_digest(server, image: dict, length: int, tmp_path) -> str:
    """The MD5 of the first ``length`` bytes of the image's disk, as a guest sees it."""
    raw = tmp_path / "image.raw"
    source = server.data_dir / "images" / image["id"]
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(source), str(raw)], check=True)
    with open(raw, "rb") as fh:
        data = fh.read(length)
    assert len(data) == length and data.strip(b"\0")  # the image's disk is not blank
    return hashlib.md5(data).hexdigest()


def test_a_volume_holds_an_images_disk(server, pool, guest, tmp_path):
    image = server.client.get("/images/nubis-tiny").json()
    size = image["virtual_size"]
    expected = image_digest(server, image, size, tmp_path)
    vol = create_volume(server, name="from-image", image="nubis-tiny", pool="local-dir")
    assert vol["size_gib"] == 1 and vol["format"] == image["disk_format"]
    iid = guest["id"]
    att = attach(server, iid, vol["id"])
    wait_guest(server, iid, "cat /sys/block/vdb/serial", att["serial"])
    assert guest_run(server, iid, "cat /sys/block/vdb/size").strip() == str(GIB // 512)
    seen = guest_run(server, iid, f"head -c {size} /dev/vdb | md5sum").split()[0]
    assert seen == expected
    detach(server, iid, vol["id"])
    resp = server.client.delete(f"/volumes/{vol['id']}")
    assert server.wait_task(resp.json()["task_id"])["status"] == "succeeded"
