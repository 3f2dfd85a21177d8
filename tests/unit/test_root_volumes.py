"""A root disk on a storage pool, as the request sees it: for system administrators,
from a disk image, in a pool that can hold one; accepted, the instance has a root
volume attached as vda, which cannot be detached on its own."""

from __future__ import annotations

from tests.unit.test_api_contract import qcow2


def test_root_pool_requests(callers, tmp_path):
    sysadmin, member = callers["system_admin"], callers["member"]
    (tmp_path / "pool").mkdir()
    pool = sysadmin.post(
        "/storage-pools",
        json={"name": "roots", "kind": "dir", "path": str(tmp_path / "pool"), "host": "fake"},
    )
    assert pool.status_code == 201, pool.text
    image = member.post(
        "/images",
        params={"name": "disk-img"},
        content=qcow2(tmp_path, "d.qcow2"),
        headers={"Content-Type": "application/octet-stream"},
    ).json()
    base = {"image": image["id"], "flavor": "m1.tiny", "networks": []}
    cases = [
        (member, {"name": "a", **base, "root_pool": "roots"}, 403, "system administrators"),
        (sysadmin, {"name": "a", **base, "root_pool": "nope"}, 404, "storage pool 'nope'"),
        (sysadmin, {"name": "bad name!", **base, "root_pool": "roots"}, 400, "instance name"),
    ]
    for caller, body, status, fragment in cases:
        resp = caller.post("/instances", json=body)
        assert resp.status_code == status, (body, resp.text)
        assert fragment in resp.text, resp.text
    assert sysadmin.get("/volumes").json()["total"] == 0  # nothing was left half-made

    made = sysadmin.post("/instances", json={"name": "on-pool", **base, "root_pool": "roots"})
    assert made.status_code == 202, made.text
    (root,) = sysadmin.get("/volumes").json()["items"]
    assert root["name"] == "on-pool-root" and root["pool_id"] == pool.json()["id"]
    assert root["size_gib"] == 1 and root["format"] == "qcow2"
    assert [a["target"] for a in root["attachments"]] == ["vda"]
    detach = sysadmin.delete(f"/instances/{made.json()['id']}/volumes/{root['id']}")
    assert detach.status_code == 409 and "root disk" in detach.text
