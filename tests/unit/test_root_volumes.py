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


def test_flavor_and_cluster_root_pools(callers, tmp_path):
    """A flavor's pool, else the cluster's, holds the root disks of instances that do
    not name one, whoever asks for them; pools that cannot serve are refused, and a
    pool named so cannot be deleted."""
    sysadmin, member = callers["system_admin"], callers["member"]
    for name in ("fast", "cheap", "mine"):
        (tmp_path / name).mkdir()
    shared = {"kind": "shared", "cluster": "default"}
    for name in ("fast", "cheap"):
        made = sysadmin.post(
            "/storage-pools",
            json={"name": name, "path": str(tmp_path / name), "tags": [name], **shared},
        )
        assert made.status_code == 201, made.text
    host_pool = sysadmin.post(
        "/storage-pools",
        json={"name": "mine", "kind": "dir", "path": str(tmp_path / "mine"), "host": "fake"},
    )
    assert host_pool.status_code == 201, host_pool.text
    pools = {p["name"]: p["id"] for p in sysadmin.get("/storage-pools").json()["items"]}
    image = member.post(
        "/images",
        params={"name": "disk-img"},
        content=qcow2(tmp_path, "d.qcow2"),
        headers={"Content-Type": "application/octet-stream"},
    ).json()

    # refused: unknown pools, a host's pool as a cluster's, a member asking
    flavor = {"name": "f.fast", "vcpus": 1, "memory_mib": 128, "disk_gib": 1}
    for caller, path, body, status, fragment in [
        (sysadmin, "/flavors", {**flavor, "root_pool": "nope"}, 404, "storage pool 'nope'"),
        (sysadmin, "/clusters/default", {"root_pool": "mine"}, 400, "not a pool of cluster"),
        (sysadmin, "/clusters/default", {"root_pool": "nope"}, 404, "storage pool 'nope'"),
        (member, "/clusters/default", {"root_pool": "cheap"}, 403, ""),
    ]:
        method = "PATCH" if path.startswith("/clusters") else "POST"
        resp = caller.request(method, path, json=body)
        assert resp.status_code == status and fragment in resp.text, (body, resp.text)
    assert sysadmin.get("/clusters/default").json()["root_pool_id"] is None
    assert sysadmin.get("/flavors", params={"name": "f.fast"}).json()["total"] == 0

    made = sysadmin.post("/flavors", json={**flavor, "root_pool": "fast"})
    assert made.status_code == 201 and made.json()["root_pool_id"] == pools["fast"], made.text
    cluster = sysadmin.request("PATCH", "/clusters/default", json={"root_pool": "cheap"})
    assert cluster.status_code == 200 and cluster.json()["root_pool_id"] == pools["cheap"]

    # a member's instances: the flavor's pool, else the cluster's; their root disks
    # take nothing of the host's disks
    host_disk = sysadmin.get("/hosts/fake").json()["alloc_disk_gib"]
    base = {"image": image["id"], "networks": []}
    for name, flavor_name, pool in [("a", "f.fast", "fast"), ("b", "m1.tiny", "cheap")]:
        resp = member.post("/instances", json={"name": name, "flavor": flavor_name, **base})
        assert resp.status_code == 202, resp.text
        assert resp.json()["disk_gib"] == 0
        (root,) = [v for v in member.get("/volumes").json()["items"] if v["name"] == f"{name}-root"]
        assert root["pool_id"] == pools[pool] and root["size_gib"] == 1, (name, root)
    assert sysadmin.get("/hosts/fake").json()["alloc_disk_gib"] == host_disk

    # a disk offering's tags pick the pool, for anyone; its secure delete applies
    offering = {"name": "safe-cheap", "tags": ["cheap"], "secure_delete": True}
    assert sysadmin.post("/disk-offerings", json=offering).status_code == 201
    assert sysadmin.post("/disk-offerings", json={"name": "gone", "tags": ["x"]}).status_code == 201
    body = {"flavor": "f.fast", **base}
    for root_body, status, fragment in [
        ({"root_offering": "nope"}, 404, "disk offering 'nope'"),
        ({"root_offering": "gone"}, 409, "no active storage pool tagged x"),
        ({"root_offering": "gone", "root_pool": "fast"}, 403, "system administrators"),
    ]:
        resp = member.post("/instances", json={"name": "o", **body, **root_body})
        assert resp.status_code == status and fragment in resp.text, (root_body, resp.text)
    resp = member.post("/instances", json={"name": "o", **body, "root_offering": "safe-cheap"})
    assert resp.status_code == 202, resp.text
    (root,) = [v for v in member.get("/volumes").json()["items"] if v["name"] == "o-root"]
    assert (root["pool_id"], root["secure_delete"]) == (pools["cheap"], True)

    # pools named by a flavor or a cluster stay until that changes
    for name, what in [("fast", "flavor f.fast"), ("cheap", "cluster default")]:
        resp = sysadmin.delete(f"/storage-pools/{name}")
        assert resp.status_code == 409 and what in resp.text, resp.text
    assert (
        sysadmin.request("PATCH", "/clusters/default", json={"root_pool": ""}).json()[
            "root_pool_id"
        ]
        is None
    )
    resp = member.post("/instances", json={"name": "c", "flavor": "m1.tiny", **base})
    assert resp.status_code == 202 and resp.json()["disk_gib"] == 1, resp.text
    assert [v for v in member.get("/volumes").json()["items"] if v["name"] == "c-root"] == []
    assert sysadmin.get("/hosts/fake").json()["alloc_disk_gib"] == host_disk + 1
