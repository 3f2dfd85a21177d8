"""Ceph RBD pools against a real one-node Ceph cluster (tests/integration/ceph.py),
listening on a two-host devcluster's underlay so that this machine's libvirtd and
the devcluster's hosts all reach it: a pool registered with a cephx user that may
use one Ceph pool only; bad monitors, keys and pools refused with nothing left
behind; a volume that is an RBD image, opened by QEMU through librbd, hot-plugged
into a running guest that writes and reads it, kept across detach and attach, grown
online, carried along when its guest live-migrates to another host, and gone from
Ceph when deleted; an RBD snapshot taken under the running guest, reverted in place
and cloned into a new volume, each keeping the guest's data; a qcow2 uploaded into
an RBD volume, downloaded from it and made a template; volumes holding an
image's disk, RBD clones of the image's one copy in the pool, which keeps the image
until they are gone; an instance whose root disk is such an RBD clone (the
cluster's root pool is in Ceph), live-migrated between the devcluster's hosts,
which share no disk directory (file root disks are copied as they move), restarted
by HA on the other host when its host crashes, and deleted with its instance; a
running guest's root disk moved live from a directory pool into Ceph and back."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest

from nubis.devcluster import underlay
from nubis.devcluster.chaos import CLUSTER, register_hosts
from tests.integration.ceph import POOL, USER, CephCluster
from tests.integration.guest import guest_run, wait_uptime
from tests.integration.server import (
    NubisServer,
    free_port,
    libvirt_leftovers,
    running_devcluster,
    serving,
)
from tests.integration.storage import (
    attach,
    create_volume,
    detach,
    libvirt_storage,
    move,
    wait_guest,
)

pytestmark = pytest.mark.integration

GIB = 1024**3


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    # hosts that share no disk directory: what moves between them is copied, or in Ceph
    with running_devcluster(tmp_path_factory.mktemp("devcluster"), 2, shared_disks=False) as c:
        yield c


@pytest.fixture(scope="module")
def ceph(cluster, tmp_path_factory) -> Iterator[CephCluster]:
    engine = CephCluster(tmp_path_factory.mktemp("ceph"), underlay.bridge_address(cluster.offset))
    try:
        engine.start()
        yield engine
    finally:
        engine.stop()


@pytest.fixture(scope="module")
def srv(cluster, tmp_path_factory) -> Iterator[NubisServer]:
    """A second Nubis server, managing the devcluster's hosts (whose libvirtds no other
    test module touches, so what is left on them is this module's doing)."""
    with serving(
        tmp_path_factory, NUBIS_HOST_DOWN_AFTER_SECONDS="5", NUBIS_HA_CHECK_INTERVAL_SECONDS="1"
    ) as s:
        register_hosts(s.client, cluster)
        yield s


def rbd_body(ceph: CephCluster, **changes) -> dict:
    body = {
        "name": "ceph",
        "kind": "rbd",
        "path": POOL,
        "cluster": CLUSTER,
        "monitors": [ceph.monitor],
        "auth_user": USER,
        "auth_key": ceph.user_key,
    }
    return {**body, **changes}


def test_bad_pools_are_refused_and_leave_nothing(srv, cluster, ceph):
    uris = [h.uri for h in cluster.hosts()]
    before = [libvirt_storage(uri) for uri in uris]
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
        (rbd_body(ceph, host="dev-1", cluster=None), "cluster"),
        # the hosts cannot use it: refused by Ceph through libvirt
        (rbd_body(ceph, auth_key=other_key), "cannot use the pool"),
        (rbd_body(ceph, path="no-such-pool"), "cannot use the pool"),
        (rbd_body(ceph, monitors=[f"127.0.0.1:{free_port()}"]), "cannot use the pool"),
    ]
    for body, fragment in cases:
        resp = srv.client.post("/storage-pools", json=body)
        assert resp.status_code == 400, (body, resp.text)
        assert fragment in resp.json()["error"]["message"], resp.text
        assert srv.client.get("/storage-pools/ceph").status_code == 404
        # no pool, no secret left on either host
        assert [libvirt_storage(uri) for uri in uris] == before, body


def test_rbd_volume_in_a_running_guest(server, ceph, guest, pool):
    local_dir = pool["path"]  # a directory pool ("local-dir") the volume moves to and back
    made = server.client.post("/storage-pools", json=rbd_body(ceph, cluster="default"))
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

    # attached to the running guest, it moves out of Ceph to a directory pool and back
    # in, live; the guest reads its data all along
    move(server, vol["id"], "local-dir")
    assert ceph.images() == []
    assert guest_run(server, iid, "head -c 14 /dev/vdb").strip() == "NUBIS-RBD-4242"
    move(server, vol["id"], "ceph")
    assert ceph.images() == [f"nubis-vol-{vol['id']}.g2.img"] and os.listdir(local_dir) == []
    assert guest_run(server, iid, "head -c 14 /dev/vdb").strip() == "NUBIS-RBD-4242"
    detach(server, iid, vol["id"])
    # detached, it does not (libvirt copies only between pools of files)
    resp = server.client.post(f"/volumes/{vol['id']}/actions/migrate", json={"pool": "local-dir"})
    assert resp.status_code == 400 and "attach the volume to a running" in resp.text, resp.text

    # a pool with volumes stays; deleted, the image leaves Ceph, then the pool goes
    assert server.client.delete("/storage-pools/ceph").status_code == 409
    resp = server.client.delete(f"/volumes/{vol['id']}")
    assert server.wait_task(resp.json()["task_id"])["status"] == "succeeded"
    assert ceph.images() == []
    assert server.client.delete("/storage-pools/ceph").status_code == 204
    pools, secrets = libvirt_storage()
    assert f"nubis-pool-{pool['id'][:8]}" not in pools + secrets


def run_task(server, method: str, path: str, **kw) -> dict:
    resp = server.client.request(method, path, **kw)
    assert resp.status_code == 202, resp.text
    task = server.wait_task(resp.json()["task_id"])
    assert task["status"] == "succeeded", task["error"]
    return resp.json()


def test_rbd_snapshot_revert_and_clone_keep_the_guests_data(server, ceph, guest, tmp_path):
    made = server.client.post(
        "/storage-pools", json=rbd_body(ceph, name="ceph-snaps", cluster="default")
    )
    assert made.status_code == 201, made.text
    iid = guest["id"]
    vol = create_volume(server, name="rbd-snapped", size_gib=1, pool="ceph-snaps")
    image = f"nubis-vol-{vol['id']}.img"
    att = attach(server, iid, vol["id"])
    wait_guest(server, iid, "cat /sys/block/vdb/serial", att["serial"])
    guest_run(server, iid, "printf NUBIS-SNAP-ONE > /dev/vdb; sync")

    # taken under the running guest: Ceph's own snapshot of the image, seen by Ceph's tool
    snap = run_task(server, "POST", f"/volumes/{vol['id']}/snapshots", json={"name": "one"})
    listed = json.loads(ceph.rbd("snap", "ls", "--format", "json", f"{POOL}/{image}"))
    assert [s["name"] for s in listed] == [f"nubis-vsnap-{snap['id']}"]
    assert server.client.get(f"/volumes/{vol['id']}/snapshots/one").json()["status"] == "available"
    guest_run(server, iid, "printf NUBIS-SNAP-TWO > /dev/vdb; sync")
    assert guest_run(server, iid, "head -c 14 /dev/vdb").strip() == "NUBIS-SNAP-TWO"

    # reverted: refused while the running guest uses it; detached, rolled back in place
    revert = f"/volumes/{vol['id']}/snapshots/one/actions/revert"
    assert server.client.post(revert).status_code == 409
    detach(server, iid, vol["id"])
    run_task(server, "POST", revert)
    assert ceph.images().count(image) == 1  # the same image, no new generation
    attach(server, iid, vol["id"])
    wait_guest(server, iid, "cat /sys/block/vdb/serial", att["serial"])
    assert guest_run(server, iid, "head -c 14 /dev/vdb").strip() == "NUBIS-SNAP-ONE"
    detach(server, iid, vol["id"])

    # a new volume from the snapshot: an RBD clone of it (Ceph's tool shows the
    # snapshot as its parent), holding its data; the original is refused deletion
    # while it has snapshots, the snapshot while it has clones
    bad = server.client.post(
        "/volumes", json={"name": "rbd-qcow2", "snapshot": snap["id"], "format": "qcow2"}
    )
    assert bad.status_code == 400 and "raw" in bad.text, bad.text
    clone = create_volume(server, name="rbd-from-snap", snapshot=snap["id"], size_gib=2)
    assert clone["size_gib"] == 2 and clone["pool_id"] == made.json()["id"]
    info = json.loads(ceph.rbd("info", "--format", "json", f"{POOL}/nubis-vol-{clone['id']}.img"))
    assert info["size"] == 2 * GIB, info
    assert (info["parent"]["image"], info["parent"]["snapshot"]) == (
        image,
        f"nubis-vsnap-{snap['id']}",
    ), info
    att = attach(server, iid, clone["id"])
    wait_guest(server, iid, "cat /sys/block/vdb/serial", att["serial"])
    assert guest_run(server, iid, "head -c 14 /dev/vdb").strip() == "NUBIS-SNAP-ONE"
    assert guest_run(server, iid, "cat /sys/block/vdb/size").strip() == str(2 * GIB // 512)
    detach(server, iid, clone["id"])
    assert server.client.delete(f"/volumes/{vol['id']}").status_code == 409

    # volumes from an image: RBD clones of the image's one copy in the pool (its base),
    # reading as the image's disk
    tiny = server.client.get("/images/nubis-tiny").json()
    source = server.data_dir / "images" / tiny["id"]
    raw_file = tmp_path / "image.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(source), str(raw_file)], check=True)
    image_id = server.upload_image(raw_file, "rbd-base-src")["id"]

    # a qcow2 uploaded as a volume lands in Ceph as the raw disk it holds, and comes
    # back down as a qcow2 file holding the same disk
    with open(source, "rb") as fh:
        resp = server.client.post(
            "/volumes/upload",
            params={"name": "rbd-uploaded", "pool": "ceph-snaps"},
            content=fh,
            headers={"Content-Type": "application/octet-stream"},
            timeout=600,
        )
    assert resp.status_code == 201, resp.text
    uploaded = resp.json()
    assert (uploaded["format"], uploaded["status"], uploaded["size_gib"]) == ("raw", "available", 1)
    exported = subprocess.run(
        ["rbd", "-c", str(ceph.conf), "export", f"{POOL}/nubis-vol-{uploaded['id']}.img", "-"],
        capture_output=True,
        check=True,
    ).stdout
    assert exported[: raw_file.stat().st_size] == raw_file.read_bytes()
    downloaded = tmp_path / "down.qcow2"
    with server.client.stream("GET", f"/volumes/{uploaded['id']}/download") as stream:
        assert stream.status_code == 200
        with open(downloaded, "wb") as out:
            for chunk in stream.iter_bytes():
                out.write(chunk)
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output=json", str(downloaded)], capture_output=True, check=True
        ).stdout
    )
    assert (info["format"], info["virtual-size"]) == ("qcow2", GIB)
    compare = ["qemu-img", "compare", "-f", "raw", "-F", "qcow2", str(raw_file), str(downloaded)]
    assert subprocess.run(compare, capture_output=True).returncode == 0  # the rest is zeros
    assert not list((server.data_dir / "spool").iterdir())  # nothing stays on the way
    # a template of it: an image holding the same disk
    run_task(
        server,
        "POST",
        f"/volumes/{uploaded['id']}/actions/create-template",
        json={"name": "rbd-template"},
    )
    template = server.client.get("/images/rbd-template").json()
    assert (template["status"], template["disk_format"]) == ("active", "qcow2"), template
    stored = server.data_dir / "images" / template["id"]
    compare[-1] = str(stored)
    assert subprocess.run(compare, capture_output=True).returncode == 0
    assert server.client.delete("/images/rbd-template").status_code == 204
    run_task(server, "DELETE", f"/volumes/{uploaded['id']}")
    base = f"nubis-base-{made.json()['id']}-{image_id}.img"
    raw = raw_file.read_bytes()
    # what a copy cut off half-way leaves: a base without its "base" snapshot, made
    # again by the first clone
    ceph.rbd("create", "--size", "1", f"{POOL}/{base}")
    booted = [
        create_volume(server, name=f"rbd-from-image-{i}", image=image_id, pool="ceph-snaps")
        for i in range(2)
    ]
    for vol_from_image in booted:
        assert vol_from_image["format"] == "raw" and vol_from_image["size_gib"] == 1
        name = f"nubis-vol-{vol_from_image['id']}.img"
        info = json.loads(ceph.rbd("info", "--format", "json", f"{POOL}/{name}"))
        assert info["parent"]["image"] == base and info["size"] == GIB, info
        exported = subprocess.run(
            ["rbd", "-c", str(ceph.conf), "export", f"{POOL}/{name}", "-"],
            capture_output=True,
            check=True,
        ).stdout
        assert len(exported) == GIB and exported[: len(raw)] == raw and raw.strip(b"\0")
    assert [i for i in ceph.images() if i.startswith("nubis-base-")] == [base]
    # the image is kept while clones depend on its base; once they are gone, the
    # image goes and its base leaves Ceph
    refused = server.client.delete(f"/images/{image_id}")
    assert refused.status_code == 409 and "rbd-from-image-0" in refused.text, refused.text
    for vol_from_image in booted:
        run_task(server, "DELETE", f"/volumes/{vol_from_image['id']}")
    assert base in ceph.images()  # kept for the next clone
    assert server.client.delete(f"/images/{image_id}").status_code == 204
    assert base not in ceph.images()

    # the snapshot is kept while its clone exists; then it leaves Ceph, and the
    # volumes and the pool go
    refused = server.client.delete(f"/volumes/{vol['id']}/snapshots/one")
    assert refused.status_code == 409 and "rbd-from-snap" in refused.text, refused.text
    run_task(server, "DELETE", f"/volumes/{clone['id']}")
    run_task(server, "DELETE", f"/volumes/{vol['id']}/snapshots/one")
    assert json.loads(ceph.rbd("snap", "ls", "--format", "json", f"{POOL}/{image}")) == []
    run_task(server, "DELETE", f"/volumes/{vol['id']}")
    assert server.client.delete("/storage-pools/ceph-snaps").status_code == 204
    assert ceph.images() == []


def migrate(srv, iid: str, host: str) -> dict[str, str]:
    """Live-migrate the instance to ``host``; the hosts' names by id."""
    resp = srv.client.post(f"/instances/{iid}/actions/migrate", json={"host": host})
    assert resp.status_code == 202, resp.text
    task = srv.wait_task(resp.json()["task_id"])
    assert task["status"] == "succeeded", task
    hosts = {h["id"]: h["name"] for h in srv.client.get("/hosts").json()["items"]}
    assert hosts[srv.instance(iid)["host_id"]] == host
    return hosts


def test_a_guest_keeps_its_rbd_volume_across_a_live_migration(srv, cluster, ceph):
    made = srv.client.post("/storage-pools", json=rbd_body(ceph))
    assert made.status_code == 201, made.text  # defined, with its secret, on both hosts
    uris = {h.name: h.uri for h in cluster.hosts()}
    iid = srv.boot("rbd-mover", host="dev-1")["id"]
    vol = create_volume(srv, name="moving", size_gib=1, pool="ceph")
    att = attach(srv, iid, vol["id"])
    serial = wait_guest(srv, iid, "cat /sys/block/vdb/serial", att["serial"], uri=uris["dev-1"])
    assert serial == att["serial"]
    guest_run(srv, iid, "printf NUBIS-RBD-MOVE > /dev/vdb; sync", uri=uris["dev-1"])

    migrate(srv, iid, "dev-2")
    # on the other host the guest reads what it wrote, from the same RBD image
    assert guest_run(srv, iid, "head -c 14 /dev/vdb", uri=uris["dev-2"]).strip() == "NUBIS-RBD-MOVE"
    guest_run(srv, iid, "printf NUBIS-RBD-TWO! > /dev/vdb; sync", uri=uris["dev-2"])

    resp = srv.client.delete(f"/instances/{iid}")
    assert srv.wait_task(resp.json()["task_id"])["status"] == "succeeded"
    assert libvirt_leftovers(iid, uris["dev-2"]) == []
    head = subprocess.run(
        ["rbd", "-c", str(ceph.conf), "export", f"{POOL}/nubis-vol-{vol['id']}.img", "-"],
        capture_output=True,
        check=True,
    ).stdout[:14]
    assert head == b"NUBIS-RBD-TWO!"
    resp = srv.client.delete(f"/volumes/{vol['id']}")
    assert srv.wait_task(resp.json()["task_id"])["status"] == "succeeded"
    assert srv.client.delete("/storage-pools/ceph").status_code == 204
    assert ceph.images() == []


# far into the root disk, past the image's 32 MiB: the guest's own data
SECTOR = 200000
DATA = "NUBIS-RBD-ROOT"
WRITE = f"printf {DATA} | dd of=/dev/vda bs=512 seek={SECTOR} conv=notrunc; sync"
READ = f"dd if=/dev/vda bs=512 skip={SECTOR} count=1 2>/dev/null | head -c {len(DATA)}"


def test_a_root_disk_on_rbd_boots_moves_live_and_goes_with_its_instance(srv, cluster, ceph):
    made = srv.client.post("/storage-pools", json=rbd_body(ceph, name="ceph-roots"))
    assert made.status_code == 201, made.text
    uris = {h.name: h.uri for h in cluster.hosts()}
    body = {"cluster": CLUSTER, "host": "dev-1", "ha": True}
    refused = srv.client.post(
        "/instances",
        json={"name": "x", "image": "nubis-tiny", "flavor": "m1.tiny", **body, "root_pool": "nope"},
    )
    assert refused.status_code == 404 and "storage pool 'nope'" in refused.text
    # the cluster's root pool: where root disks go when the request names none
    resp = srv.client.patch(f"/clusters/{CLUSTER}", json={"root_pool": "ceph-roots"})
    assert resp.status_code == 200 and resp.json()["root_pool_id"] == made.json()["id"]
    iid = srv.boot("rbd-root", **body)["id"]
    assert srv.client.patch(f"/clusters/{CLUSTER}", json={"root_pool": ""}).status_code == 200

    # its root disk is a volume: an RBD clone of the image's copy in Ceph, no file of
    # the host
    (root,) = [
        v for v in srv.client.get("/volumes").json()["items"] if v["name"] == "rbd-root-root"
    ]
    assert root["status"] == "in-use" and root["size_gib"] == 1 and root["format"] == "raw"
    base = f"nubis-base-{made.json()['id']}-{srv.client.get('/images/nubis-tiny').json()['id']}"
    info = json.loads(ceph.rbd("info", "--format", "json", f"{POOL}/nubis-vol-{root['id']}.img"))
    assert info["parent"]["image"] == f"{base}.img" and info["size"] == GIB, info
    refused = srv.client.delete("/images/nubis-tiny")
    assert refused.status_code == 409 and "rbd-root-root" in refused.text, refused.text
    assert not [x for x in libvirt_leftovers(iid, uris["dev-1"]) if x.endswith("-root")]
    guest_run(srv, iid, WRITE, uri=uris["dev-1"])

    # what works on root disk files is refused, and so is detaching it
    for method, path, payload in [
        ("POST", f"/instances/{iid}/snapshots", {"name": "s"}),
        ("POST", f"/instances/{iid}/actions/clone", {"name": "c"}),
        ("DELETE", f"/instances/{iid}/volumes/{root['id']}", None),
    ]:
        resp = srv.client.request(method, path, json=payload)
        assert resp.status_code == 409, (path, resp.text)

    # live to the other host (they share no disk directory): the root disk stays in
    # Ceph, the guest runs on and reads what it wrote
    hosts = migrate(srv, iid, "dev-2")
    assert guest_run(srv, iid, READ, uri=uris["dev-2"]).strip() == DATA
    assert libvirt_leftovers(iid, uris["dev-1"]) == []

    # its root volume takes RBD snapshots as any volume; they go before the instance
    run_task(srv, "POST", f"/volumes/{root['id']}/snapshots", json={"name": "root-snap"})
    refused = srv.client.delete(f"/instances/{iid}")
    assert refused.status_code == 409 and "root-snap" in refused.text
    run_task(srv, "DELETE", f"/volumes/{root['id']}/snapshots/root-snap")

    # its host crashes: fenced, then HA restarts it on the other host from the same
    # RBD image (no lease, no shared directory: the fence is the proof)
    dead = srv.client.get("/hosts/dev-2").json()["id"]
    cluster.host("dev-2").kill()
    deadline = time.monotonic() + 180
    while True:
        tasks = srv.client.get("/tasks", params={"resource_id": dead}).json()["items"]
        failovers = [t for t in tasks if t["kind"] == "host.failover"]
        if failovers:
            break
        assert time.monotonic() < deadline, "dev-2 was never failed over"
        time.sleep(1)
    assert srv.wait_task(failovers[0]["id"])["status"] == "succeeded", failovers[0]
    restarted = srv.instance(iid)
    assert restarted["status"] == "running" and hosts[restarted["host_id"]] == "dev-1"
    srv.wait_console(iid)
    assert guest_run(srv, iid, READ, uri=uris["dev-1"]).strip() == DATA
    cluster.start(cluster.host("dev-2"))
    srv.wait_field("/hosts/dev-2", "state", "up", timeout=120)
    # back, the crashed host keeps nothing of the instance: its stale domain and the
    # seed disc it had (the hosts share no disk directory) went before it counted up
    assert libvirt_leftovers(iid, uris["dev-2"]) == []

    # deleted at once, it takes its root volume along, out of the database and out of
    # Ceph (where the crashed host's QEMU still watches the image for up to 30 s)
    resp = srv.client.delete(f"/instances/{iid}")
    assert srv.wait_task(resp.json()["task_id"])["status"] == "succeeded"
    assert srv.client.get(f"/volumes/{root['id']}").status_code == 404
    assert f"nubis-vol-{root['id']}.img" not in ceph.images()
    # the image's base stays for the next instance, until the pool goes
    assert f"{base}.img" in ceph.images()
    # the base of an image deleted while the control plane could not remove it
    # (protected snapshot and all) is swept when it starts
    stray = f"nubis-base-{made.json()['id']}-{uuid.uuid4()}.img"
    ceph.rbd("create", "--size", "1", f"{POOL}/{stray}")
    ceph.rbd("snap", "create", f"{POOL}/{stray}@base")
    ceph.rbd("snap", "protect", f"{POOL}/{stray}@base")
    srv.restart()
    deadline = time.monotonic() + 60
    while stray in ceph.images():
        assert time.monotonic() < deadline, "the stray base was never swept"
        time.sleep(1)
    assert f"{base}.img" in ceph.images()
    assert srv.client.delete("/storage-pools/ceph-roots").status_code == 204
    assert f"{base}.img" not in ceph.images()


def test_a_running_guests_root_disk_moves_into_ceph_and_back(server, ceph, pool):
    made = server.client.post(
        "/storage-pools", json=rbd_body(ceph, name="ceph-moves", cluster="default")
    )
    assert made.status_code == 201, made.text
    iid = server.boot("root-mover", root_pool="local-dir")["id"]
    (root,) = [
        v for v in server.client.get("/volumes").json()["items"] if v["name"] == "root-mover-root"
    ]
    guest_run(server, iid, WRITE)
    before = wait_uptime(server, iid, 1)

    # live into Ceph: the guest runs on, from an RBD image, and reads what it wrote
    move(server, root["id"], "ceph-moves")
    moved = server.client.get(f"/volumes/{root['id']}").json()
    assert (moved["pool_id"], moved["format"]) == (made.json()["id"], "raw")
    assert f"nubis-vol-{root['id']}.g1.img" in ceph.images()
    assert os.listdir(pool["path"]) == []
    during = wait_uptime(server, iid, before + 2)
    assert guest_run(server, iid, READ).strip() == DATA

    # and back to the directory, still running
    move(server, root["id"], "local-dir")
    assert server.client.get(f"/volumes/{root['id']}").json()["pool_id"] == pool["id"]
    assert [i for i in ceph.images() if root["id"] in i] == []
    assert wait_uptime(server, iid, during + 2) > during
    assert server.instance(iid)["status"] == "running"
    assert guest_run(server, iid, READ).strip() == DATA

    resp = server.client.delete(f"/instances/{iid}")
    assert server.wait_task(resp.json()["task_id"])["status"] == "succeeded"
    assert server.client.delete("/storage-pools/ceph-moves").status_code == 204
