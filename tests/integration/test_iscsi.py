"""iSCSI pools against a real target (tgt, tests/integration/tgt.py) that wants CHAP,
listening on a two-host devcluster's underlay: bad portals, IQNs and secrets refused
with nothing left behind on the hosts; the target's LUNs listed and adopted as volumes
(the SAN makes LUNs, Nubis does not); a LUN opened by QEMU's own initiator
(libiscsi), hot-plugged into a running guest on one host that writes it, detached and
attached to a guest on the other host that reads it, and given back to the SAN with
its data when the volume is deleted."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from nubis.devcluster import underlay
from nubis.devcluster.chaos import CLUSTER, register_hosts
from tests.integration.guest import guest_run
from tests.integration.server import NubisServer, free_port, running_devcluster, serving
from tests.integration.storage import (
    attach,
    create_volume,
    detach,
    libvirt_storage,
    wait_guest,
)
from tests.integration.tgt import CHAP_SECRET, CHAP_USER, GIB, IQN, TgtTarget

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with running_devcluster(tmp_path_factory.mktemp("devcluster"), 2) as c:
        yield c


@pytest.fixture(scope="module")
def target(cluster, tmp_path_factory) -> Iterator[TgtTarget]:
    tgt = TgtTarget(tmp_path_factory.mktemp("tgt"), underlay.bridge_address(cluster.offset))
    try:
        tgt.start()
        yield tgt
    finally:
        tgt.stop()


@pytest.fixture(scope="module")
def srv(cluster, tmp_path_factory) -> Iterator[NubisServer]:
    """A Nubis server managing the devcluster's hosts (whose libvirtds no other test
    module touches, so what is left on them is this module's doing)."""
    with serving(tmp_path_factory) as s:
        register_hosts(s.client, cluster)
        yield s


def iscsi_body(target: TgtTarget, **changes) -> dict:
    body = {
        "name": "san",
        "kind": "iscsi",
        "path": IQN,
        "cluster": CLUSTER,
        "portal": target.portal,
        "auth_user": CHAP_USER,
        "auth_key": CHAP_SECRET,
    }
    return {k: v for k, v in {**body, **changes}.items() if v is not None}


def test_bad_iscsi_pools_are_refused_and_leave_nothing(srv, cluster, target):
    uris = [h.uri for h in cluster.hosts()]
    before = [libvirt_storage(uri) for uri in uris]
    cases = [
        (iscsi_body(target, portal=None), "portal"),
        (iscsi_body(target, path="not-an-iqn"), "IQN"),
        (iscsi_body(target, initiator="me"), "initiator"),
        (iscsi_body(target, auth_key=None), "CHAP needs both"),
        (iscsi_body(target, monitors=["127.0.0.1"]), "monitors are for rbd"),
        # the hosts cannot log in: refused by the target through libvirt
        (iscsi_body(target, auth_key="wrong-secret-42"), "cannot use the pool"),
        (iscsi_body(target, auth_user="", auth_key=""), "cannot use the pool"),
        (iscsi_body(target, path=IQN + "-none"), "cannot use the pool"),
        (iscsi_body(target, portal=f"{target.address}:{free_port()}"), "cannot use the pool"),
    ]
    for body, fragment in cases:
        resp = srv.client.post("/storage-pools", json=body)
        assert resp.status_code == 400, (body, resp.text)
        assert fragment in resp.json()["error"]["message"], resp.text
        assert srv.client.get("/storage-pools/san").status_code == 404
        assert [libvirt_storage(uri) for uri in uris] == before, body


def test_a_lun_written_on_one_host_read_on_another_and_given_back(srv, cluster, target):
    made = srv.client.post("/storage-pools", json=iscsi_body(target))
    assert made.status_code == 201, made.text
    pool = made.json()
    assert pool["initiator"].startswith("iqn.") and "auth_key" not in pool
    luns = srv.client.get("/storage-pools/san/luns").json()
    assert [(x["lun"], x["volume_id"]) for x in luns] == [(1, None), (2, None)]
    # libvirt counts a LUN one block short (tgt's controller, LUN 0, is not listed)
    assert all(GIB - 4096 <= x["size_bytes"] <= GIB for x in luns), luns

    # LUNs are the SAN's: none is made, a missing one fails the task, one is adopted once
    resp = srv.client.post("/volumes", json={"name": "x", "size_gib": 1, "pool": "san"})
    assert resp.status_code == 400 and "give lun" in resp.text
    missing = srv.client.post(
        "/volumes", json={"name": "nolun", "size_gib": 1, "pool": "san", "lun": 9}
    )
    assert missing.status_code == 202, missing.text
    task = srv.wait_task(missing.json()["task_id"])
    assert task["status"] == "failed" and "no LUN 9" in task["error"], task
    resp = srv.client.delete(f"/volumes/{missing.json()['id']}")
    assert srv.wait_task(resp.json()["task_id"])["status"] == "succeeded"
    vol = create_volume(srv, name="lun1", size_gib=1, pool="san", lun=1)
    assert (vol["lun"], vol["format"], vol["status"]) == (1, "raw", "available")
    again = srv.client.post(
        "/volumes", json={"name": "lun1b", "size_gib": 1, "pool": "san", "lun": 1}
    )
    assert again.status_code == 409 and "already" in again.text
    resp = srv.client.post(f"/volumes/{vol['id']}/actions/extend", json={"size_gib": 2})
    assert resp.status_code == 400 and "SAN" in resp.text

    uris = {h.name: h.uri for h in cluster.hosts()}
    first = srv.boot("lun-writer", host="dev-1")["id"]
    second = srv.boot("lun-reader", host="dev-2")["id"]
    att = attach(srv, first, vol["id"])
    serial = wait_guest(srv, first, "cat /sys/block/vdb/serial", att["serial"], uri=uris["dev-1"])
    assert serial == att["serial"]
    size = guest_run(srv, first, "cat /sys/block/vdb/size", uri=uris["dev-1"]).strip()
    assert size == str(GIB // 512)
    guest_run(srv, first, "printf NUBIS-LUN-4242 > /dev/vdb; sync", uri=uris["dev-1"])
    detach(srv, first, vol["id"])
    gone = wait_guest(srv, first, "ls /sys/block | grep -c vdb", "0", uri=uris["dev-1"])
    assert gone == "0"
    with target.lun_file(1).open("rb") as f:  # the bytes are on the target's LUN
        assert f.read(14) == b"NUBIS-LUN-4242"

    # the other host logs in to the same LUN: its guest reads what the first one wrote
    att = attach(srv, second, vol["id"])
    wait_guest(srv, second, "cat /sys/block/vdb/serial", att["serial"], uri=uris["dev-2"])
    head = guest_run(srv, second, "head -c 14 /dev/vdb", uri=uris["dev-2"]).strip()
    assert head == "NUBIS-LUN-4242"
    guest_run(srv, second, "printf NUBIS-LUN-TWO! > /dev/vdb; sync", uri=uris["dev-2"])
    detach(srv, second, vol["id"])
    for iid in (first, second):
        resp = srv.client.delete(f"/instances/{iid}")
        assert srv.wait_task(resp.json()["task_id"])["status"] == "succeeded"

    # deleted, the volume gives the LUN back to the SAN with its data
    resp = srv.client.delete(f"/volumes/{vol['id']}")
    assert srv.wait_task(resp.json()["task_id"])["status"] == "succeeded"
    with target.lun_file(1).open("rb") as f:
        assert f.read(14) == b"NUBIS-LUN-TWO!"
    luns = srv.client.get("/storage-pools/san/luns").json()
    assert [x["volume_id"] for x in luns] == [None, None]
    assert srv.client.delete("/storage-pools/san").status_code == 204
    for uri in uris.values():
        pools, secrets = libvirt_storage(uri)
        assert f"nubis-pool-{pool['id'][:8]}" not in pools + secrets
