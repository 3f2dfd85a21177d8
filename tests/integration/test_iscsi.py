"""iSCSI pools against a real target (tgt, tests/integration/tgt.py) that wants CHAP:
bad portals, IQNs and secrets refused with nothing left behind; the target's LUNs
listed and adopted as volumes (the SAN makes LUNs, Nubis does not); a LUN opened by
QEMU's own initiator (libiscsi), hot-plugged into a running guest that writes it,
kept across detach and attach, and given back to the SAN with its data when the
volume is deleted."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.ceph import free_port
from tests.integration.guest import guest_run
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
def target(tmp_path_factory) -> Iterator[TgtTarget]:
    tgt = TgtTarget(tmp_path_factory.mktemp("tgt"))
    try:
        tgt.start()
        yield tgt
    finally:
        tgt.stop()


def iscsi_body(target: TgtTarget, **changes) -> dict:
    body = {
        "name": "san",
        "kind": "iscsi",
        "path": IQN,
        "cluster": "default",
        "portal": target.portal,
        "auth_user": CHAP_USER,
        "auth_key": CHAP_SECRET,
    }
    return {k: v for k, v in {**body, **changes}.items() if v is not None}


def test_bad_iscsi_pools_are_refused_and_leave_nothing(server, target):
    before = libvirt_storage()
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
        (iscsi_body(target, portal=f"127.0.0.1:{free_port()}"), "cannot use the pool"),
    ]
    for body, fragment in cases:
        resp = server.client.post("/storage-pools", json=body)
        assert resp.status_code == 400, (body, resp.text)
        assert fragment in resp.json()["error"]["message"], resp.text
        assert server.client.get("/storage-pools/san").status_code == 404
        assert libvirt_storage() == before, body


def test_a_lun_adopted_written_by_a_guest_and_given_back(server, target, guest):
    made = server.client.post("/storage-pools", json=iscsi_body(target))
    assert made.status_code == 201, made.text
    pool = made.json()
    assert pool["initiator"].startswith("iqn.") and "auth_key" not in pool
    luns = server.client.get("/storage-pools/san/luns").json()
    assert [(x["lun"], x["volume_id"]) for x in luns] == [(1, None), (2, None)]
    # libvirt counts a LUN one block short (tgt's controller, LUN 0, is not listed)
    assert all(GIB - 4096 <= x["size_bytes"] <= GIB for x in luns), luns

    # LUNs are the SAN's: none is made, a missing one fails the task, one is adopted once
    resp = server.client.post("/volumes", json={"name": "x", "size_gib": 1, "pool": "san"})
    assert resp.status_code == 400 and "give lun" in resp.text
    missing = server.client.post(
        "/volumes", json={"name": "nolun", "size_gib": 1, "pool": "san", "lun": 9}
    )
    assert missing.status_code == 202, missing.text
    task = server.wait_task(missing.json()["task_id"])
    assert task["status"] == "failed" and "no LUN 9" in task["error"], task
    resp = server.client.delete(f"/volumes/{missing.json()['id']}")
    assert server.wait_task(resp.json()["task_id"])["status"] == "succeeded"
    vol = create_volume(server, name="lun1", size_gib=1, pool="san", lun=1)
    assert (vol["lun"], vol["format"], vol["status"]) == (1, "raw", "available")
    again = server.client.post(
        "/volumes", json={"name": "lun1b", "size_gib": 1, "pool": "san", "lun": 1}
    )
    assert again.status_code == 409 and "already" in again.text
    resp = server.client.post(f"/volumes/{vol['id']}/actions/extend", json={"size_gib": 2})
    assert resp.status_code == 400 and "SAN" in resp.text

    iid = guest["id"]
    att = attach(server, iid, vol["id"])
    assert wait_guest(server, iid, "cat /sys/block/vdb/serial", att["serial"]) == att["serial"]
    assert guest_run(server, iid, "cat /sys/block/vdb/size").strip() == str(GIB // 512)
    guest_run(server, iid, "printf NUBIS-LUN-4242 > /dev/vdb; sync")
    detach(server, iid, vol["id"])
    assert wait_guest(server, iid, "ls /sys/block | grep -c vdb", "0") == "0"
    with target.lun_file(1).open("rb") as f:  # the bytes are on the target's LUN
        assert f.read(14) == b"NUBIS-LUN-4242"
    attach(server, iid, vol["id"])
    wait_guest(server, iid, "cat /sys/block/vdb/serial", att["serial"])
    assert guest_run(server, iid, "head -c 14 /dev/vdb").strip() == "NUBIS-LUN-4242"
    detach(server, iid, vol["id"])

    # deleted, the volume gives the LUN back to the SAN with its data
    resp = server.client.delete(f"/volumes/{vol['id']}")
    assert server.wait_task(resp.json()["task_id"])["status"] == "succeeded"
    with target.lun_file(1).open("rb") as f:
        assert f.read(14) == b"NUBIS-LUN-4242"
    luns = server.client.get("/storage-pools/san/luns").json()
    assert [x["volume_id"] for x in luns] == [None, None]
    assert server.client.delete("/storage-pools/san").status_code == 204
    pools, secrets = libvirt_storage()
    assert f"nubis-pool-{pool['id'][:8]}" not in pools + secrets
