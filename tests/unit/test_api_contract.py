"""The REST contract on a control plane whose host is libvirt's test:/// driver.

No task worker runs here: these tests are about what requests are accepted,
what is refused (with which error) and that a refused request changes nothing.
Real VMs are exercised in tests/integration.
"""

import hashlib
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from nubis.api.app import create_app
from nubis.db.models import Controller, Host, Image, Instance, Task, utcnow


@pytest.fixture
def client(platform):
    app = create_app(platform, manage_lifecycle=False)
    with TestClient(app) as c:
        password = (platform.settings.data_dir / "admin-password").read_text().strip()
        token = c.post("/api/v1/auth/tokens", json={"username": "admin", "password": password})
        assert token.status_code == 201
        c.headers["Authorization"] = f"Bearer {token.json()['token']}"
        yield c


def counts(platform) -> tuple[int, int, int, int]:
    with platform.db.begin() as s:
        return tuple(
            s.scalar(select(func.count()).select_from(m)) for m in (Host, Image, Instance, Task)
        )


def qcow2(tmp_path: Path, name: str, *extra: str) -> bytes:
    path = tmp_path / name
    subprocess.run(
        ["qemu-img", "create", "-f", "qcow2", *extra, str(path), "16M"],
        check=True,
        capture_output=True,
    )
    return path.read_bytes()


def upload(client, name: str, data: bytes):
    return client.post(
        "/api/v1/images",
        params={"name": name},
        content=data,
        headers={"Content-Type": "application/octet-stream"},
    )


def assert_error(resp, status: int, fragment: str) -> None:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"])
    assert fragment in body["error"]["message"]


def test_health_needs_no_token(client):
    client.headers.pop("Authorization")
    assert client.get("/api/v1/health").json() == {"status": "ok"}


def test_every_other_route_needs_a_valid_token(client):
    client.headers["Authorization"] = "Bearer not-a-token"
    assert_error(client.get("/api/v1/instances"), 401, "invalid or expired token")
    client.headers.pop("Authorization")
    assert_error(client.get("/api/v1/hosts"), 401, "missing bearer token")


def test_wrong_password_is_refused(client):
    resp = client.post("/api/v1/auth/tokens", json={"username": "admin", "password": "nope"})
    assert_error(resp, 401, "invalid username or password")


def test_revoked_token_stops_working(client):
    assert client.delete("/api/v1/auth/tokens/current").status_code == 204
    assert_error(client.get("/api/v1/flavors"), 401, "invalid or expired token")


def test_openapi_document_lists_the_contract(client):
    paths = client.get("/api/v1/openapi.json").json()["paths"]
    for path in (
        "/api/v1/instances",
        "/api/v1/instances/{ref}/actions/{action}",
        "/api/v1/images",
        "/api/v1/tasks/{task_id}",
        "/api/v1/hosts",
    ):
        assert path in paths


def test_seeded_flavors_and_pagination(client):
    names = [f["name"] for f in client.get("/api/v1/flavors").json()["items"]]
    assert {"m1.tiny", "m1.small"} <= set(names)
    first = client.get("/api/v1/flavors", params={"limit": 1}).json()
    assert first["total"] == len(names) and len(first["items"]) == 1
    after = client.get("/api/v1/flavors", params={"limit": 1, "marker": first["items"][0]["id"]})
    assert after.json()["items"][0]["name"] == names[1]
    assert (
        client.get("/api/v1/flavors", params={"offset": 1}).json()["items"][0]["name"] == names[1]
    )
    assert_error(client.get("/api/v1/flavors", params={"limit": 0}), 400, "limit")


def test_lists_sort_by_a_column_either_way(client):
    names = [f["name"] for f in client.get("/api/v1/flavors").json()["items"]]
    up = client.get("/api/v1/flavors", params={"sort": "name"}).json()["items"]
    down = client.get("/api/v1/flavors", params={"sort": "-name"}).json()["items"]
    assert [f["name"] for f in up] == sorted(names)
    assert [f["name"] for f in down] == sorted(names, reverse=True)
    second = client.get("/api/v1/flavors", params={"sort": "-name", "offset": 1, "limit": 1})
    assert second.json()["items"][0]["name"] == sorted(names, reverse=True)[1]
    assert_error(client.get("/api/v1/flavors", params={"sort": "vcpus"}), 400, "sort must be")
    assert_error(client.get("/api/v1/flavors", params={"sort": "status"}), 400, "sort must be")
    marker = up[0]["id"]
    assert_error(
        client.get("/api/v1/flavors", params={"sort": "name", "marker": marker}), 400, "marker"
    )


def test_tiny_flavor_matches_the_spec(client):
    tiny = client.get("/api/v1/flavors/m1.tiny").json()
    assert (tiny["vcpus"], tiny["memory_mib"], tiny["disk_gib"]) == (1, 128, 1)


def test_upload_a_qcow2_records_format_size_and_checksum(client, platform, tmp_path):
    data = qcow2(tmp_path, "ok.qcow2")
    resp = upload(client, "ok", data)
    assert resp.status_code == 201, resp.text
    image = resp.json()
    assert image["disk_format"] == "qcow2"
    assert image["virtual_size"] == 16 * 1024 * 1024
    assert image["sha256"] == hashlib.sha256(data).hexdigest()
    assert (platform.settings.image_dir / image["id"]).read_bytes() == data
    again = upload(client, "ok", data)
    assert_error(again, 409, "already exists")


def test_upload_with_backing_file_is_refused_and_leaves_nothing(client, platform, tmp_path):
    before = counts(platform)
    data = qcow2(tmp_path, "evil.qcow2", "-b", "/etc/passwd", "-F", "raw")
    resp = upload(client, "evil", data)
    assert_error(resp, 400, "backing file")
    assert counts(platform) == before
    assert list(platform.settings.image_dir.iterdir()) == []


def test_import_from_server_path_and_bad_paths(client, platform, tmp_path):
    """Server files are imported from the import directory only (the attacks on that
    rule are in tests/security/test_image_import.py)."""
    import_dir = platform.settings.images_import_dir
    qcow2(import_dir, "srv.qcow2")
    resp = client.post(
        "/api/v1/images", json={"name": "srv", "path": str(import_dir / "srv.qcow2")}
    )
    assert resp.status_code == 201, resp.text
    qcow2(import_dir, "rel.qcow2")
    resp = client.post("/api/v1/images", json={"name": "rel", "path": "rel.qcow2"})
    assert resp.status_code == 201, resp.text
    missing = client.post("/api/v1/images", json={"name": "x", "path": "nonexistent"})
    assert_error(missing, 400, "not a file in the import directory")


def test_create_instance_refusals_change_nothing(client, platform, tmp_path):
    image = upload(client, "img", qcow2(tmp_path, "i.qcow2")).json()
    before = counts(platform)
    cases = [
        ({"name": "a", "image": "no-such-image", "flavor": "m1.tiny"}, 404, "image"),
        ({"name": "a", "image": image["id"], "flavor": "no-such"}, 404, "flavor"),
        ({"name": "a", "image": "img", "flavor": "m1.large"}, 409, "no host can take"),
        ({"name": "a", "image": "img", "flavor": "m1.tiny", "host": "nohost"}, 404, "host"),
        ({"name": "bad name!", "image": "img", "flavor": "m1.tiny"}, 400, "name must be"),
        ({"name": "a", "image": "img"}, 422, "flavor"),
    ]
    for body, status, fragment in cases:
        assert_error(client.post("/api/v1/instances", json=body), status, fragment)
    malformed = client.post(
        "/api/v1/instances", content=b'{"name": "a",', headers={"Content-Type": "application/json"}
    )
    assert_error(malformed, 422, "JSON")
    assert counts(platform) == before


def test_accepted_create_returns_instance_and_task_and_guards_actions(client, tmp_path):
    upload(client, "img", qcow2(tmp_path, "i.qcow2"))
    resp = client.post(
        "/api/v1/instances", json={"name": "vm", "image": "img", "flavor": "m1.tiny"}
    )
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert body["status"] == "building" and body["task_id"]
    task = client.get(f"/api/v1/tasks/{body['task_id']}").json()
    assert task["status"] == "queued" and task["resource_id"] == body["id"]
    # an operation is in flight: every other mutation is a conflict
    assert_error(client.post(f"/api/v1/instances/{body['id']}/actions/stop"), 409, "busy")
    assert_error(client.delete("/api/v1/instances/vm"), 409, "busy")
    assert_error(client.post("/api/v1/instances/vm/actions/explode"), 404, "unknown action")
    dup = client.post("/api/v1/instances", json={"name": "vm", "image": "img", "flavor": "m1.tiny"})
    assert_error(dup, 409, "already exists")
    listed = client.get("/api/v1/instances", params={"status": "building"}).json()
    assert [i["name"] for i in listed["items"]] == ["vm"]
    assert client.get("/api/v1/instances", params={"name": "other"}).json()["total"] == 0
    assert_error(client.get("/api/v1/instances", params={"status": "exploded"}), 400, "status")


def test_host_registration_errors(client, platform):
    before = counts(platform)
    assert_error(
        client.post("/api/v1/hosts", json={"name": "h", "uri": "http://x"}), 400, "libvirt URI"
    )
    unreachable = client.post(
        "/api/v1/hosts", json={"name": "h", "uri": "qemu+tcp://127.0.0.1:1/system"}
    )
    assert_error(unreachable, 400, "cannot use libvirt host")
    dup = client.post("/api/v1/hosts", json={"name": "fake", "uri": "test:///default"})
    assert_error(dup, 409, "already registered")
    assert counts(platform) == before


def test_unknown_resources_are_404(client):
    for path in (
        "/api/v1/instances/nope",
        "/api/v1/images/nope",
        "/api/v1/hosts/nope",
        "/api/v1/flavors/nope",
        "/api/v1/tasks/nope",
    ):
        assert_error(client.get(path), 404, "not found")


def test_image_delete_is_refused_while_in_use_and_removes_the_file_after(
    client, platform, tmp_path
):
    image = upload(client, "img", qcow2(tmp_path, "i.qcow2")).json()
    spare = upload(client, "spare", qcow2(tmp_path, "s.qcow2")).json()
    client.post("/api/v1/instances", json={"name": "user", "image": "img", "flavor": "m1.tiny"})
    assert_error(
        client.delete(f"/api/v1/images/{image['id']}"), 409, "base of 1 linked clone(s): user"
    )
    assert (platform.settings.image_dir / image["id"]).exists()
    assert client.delete("/api/v1/images/spare").status_code == 204
    assert client.get(f"/api/v1/images/{spare['id']}").status_code == 404
    assert not (platform.settings.image_dir / spare["id"]).exists()


def test_host_credentials_are_stored_encrypted_and_never_returned(client, platform):
    resp = client.post(
        "/api/v1/hosts",
        json={
            "name": "withpw",
            "uri": "test:///default?x=1",
            "username": "u",
            "password": "s3cret-pw",
        },
    )
    assert resp.status_code == 201, resp.text
    assert "s3cret-pw" not in resp.text
    assert "s3cret-pw" not in client.get("/api/v1/hosts").text
    with platform.db.begin() as s:
        stored = s.get(Host, resp.json()["id"]).credentials
    assert stored and "s3cret-pw" not in stored
    assert platform.box.decrypt(stored)["password"] == "s3cret-pw"


def test_concurrent_actions_on_one_instance_let_exactly_one_through(client, platform, tmp_path):
    """The compare-and-swap on task_state, under real concurrency on both databases."""
    import threading

    from nubis.services.core.errors import Conflict
    from nubis.services.identity.auth import authenticate

    upload(client, "img", qcow2(tmp_path, "i.qcow2"))
    created = client.post(
        "/api/v1/instances", json={"name": "racy", "image": "img", "flavor": "m1.tiny"}
    ).json()
    with platform.db.begin() as s:  # as if the create had finished
        inst = s.get(Instance, created["id"])
        inst.status, inst.task_state = "running", None
        principal = authenticate(s, client.headers["Authorization"].split()[1])
    results: list[str] = []
    barrier = threading.Barrier(8)

    def attempt(action: str) -> None:
        barrier.wait()
        try:
            with platform.db.begin() as s:
                platform.instances.action(s, principal, created["id"], action)
            results.append("accepted")
        except Conflict:
            results.append("conflict")

    threads = [
        threading.Thread(target=attempt, args=(a,))
        for a in ("stop", "reboot", "pause", "force-stop") * 2
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["accepted"] + ["conflict"] * 7
    with platform.db.begin() as s:
        tasks = s.scalars(select(Task).where(Task.resource_id == created["id"])).all()
    assert len(tasks) == 2  # the create and the one accepted action


def test_zones_clusters_and_capacity_routes(client):
    assert client.get("/api/v1/zones").json()["items"][0]["name"] == "default"
    assert (
        client.get("/api/v1/hosts/fake").json()["cluster_id"]
        == (client.get("/api/v1/clusters/default").json()["id"])
    )
    assert client.post("/api/v1/zones", json={"name": "dc2"}).status_code == 201
    assert_error(client.post("/api/v1/zones", json={"name": "dc2"}), 409, "already exists")
    created = client.post(
        "/api/v1/clusters",
        json={"name": "gold", "zone": "dc2", "cpu_ratio": 2.0, "max_instances_per_host": 10},
    )
    assert created.status_code == 201, created.text
    gold = created.json()
    assert (gold["cpu_ratio"], gold["memory_ratio"], gold["disable_threshold"]) == (2.0, 1.0, 0.85)
    for bad, fragment in (
        ({"cpu_ratio": 0}, "cpu_ratio"),
        ({"disable_threshold": 1.5}, "disable_threshold"),
        ({"weigher": "random"}, "weigher"),
        ({"max_instances_per_host": 0}, "max_instances"),
    ):
        assert_error(client.patch("/api/v1/clusters/gold", json=bad), 400, fragment)
    patched = client.patch("/api/v1/clusters/gold", json={"max_instances_per_host": None})
    assert patched.json()["max_instances_per_host"] is None
    assert_error(client.post("/api/v1/clusters", json={"name": "x", "zone": "nope"}), 404, "zone")
    assert_error(client.delete("/api/v1/zones/dc2"), 409, "still has clusters")
    assert_error(client.delete("/api/v1/clusters/default"), 409, "still has hosts")
    assert client.delete("/api/v1/clusters/gold").status_code == 204
    cap = client.get("/api/v1/clusters/default/capacity").json()
    assert cap["hosts"] == 1 and cap["vcpus"]["overcommitted"] == cap["vcpus"]["physical"] * 3
    assert client.get("/api/v1/hosts/fake/capacity").json() == cap
    assert client.get("/api/v1/zones/default/capacity").json() == cap


def test_host_enable_disable_and_rule_group_routes(client, tmp_path):
    assert client.post("/api/v1/hosts/fake/actions/disable").json()["enabled"] is False
    upload(client, "img", qcow2(tmp_path, "i.qcow2"))
    body = {"name": "vm", "image": "img", "flavor": "m1.tiny"}
    assert_error(client.post("/api/v1/instances", json=body), 409, "host state")
    assert client.post("/api/v1/hosts/fake/actions/enable").json()["enabled"] is True
    assert_error(client.post("/api/v1/hosts/fake/actions/reboot"), 404, "unknown host action")
    group = client.post("/api/v1/rule-groups", json={"name": "g", "policy": "anti-affinity"})
    assert group.status_code == 201, group.text
    created = client.post("/api/v1/instances", json={**body, "rule_group": "g"})
    assert created.status_code == 202, created.text
    assert client.get("/api/v1/rule-groups/g").json()["members"] == [created.json()["id"]]
    second = client.post("/api/v1/instances", json={**body, "name": "vm2", "rule_group": "g"})
    assert_error(second, 409, "rule group removed 1")
    assert_error(client.delete("/api/v1/rule-groups/g"), 409, "member")
    assert_error(
        client.post("/api/v1/instances", json={**body, "name": "vm3", "rule_group": "nope"}),
        404,
        "rule group",
    )


def test_an_unknown_field_is_refused_not_dropped(client, platform, tmp_path):
    upload(client, "img", qcow2(tmp_path, "i.qcow2"))
    before = counts(platform)
    body = {"name": "vm", "image": "img", "flavor": "m1.tiny", "nics": [{"network": "n"}]}
    assert_error(client.post("/api/v1/instances", json=body), 422, "nics: Extra inputs")
    assert_error(
        client.post(
            "/api/v1/flavors",
            json={"name": "f", "vcpus": 1, "memory_mib": 64, "disk_gib": 1, "gpu": 1},
        ),
        422,
        "gpu",
    )
    assert counts(platform) == before


def test_no_route_is_registered_twice():
    """Each (method, path) is served by one handler, in the native API and in the
    OpenStack-compatible one (a second registration is dead code that drifts)."""
    from nubis.api import app
    from nubis.api.openstack import app as openstack

    for modules in (app.MODULES, openstack.MODULES):
        seen = [
            (method, route.path)
            for module in modules
            for route in module.router.routes
            for method in getattr(route, "methods", None) or ()
        ]
        duplicates = sorted({r for r in seen if seen.count(r) > 1})
        assert duplicates == []
        assert len(seen) > 50


def test_controllers_list_the_one_answering_with_its_tasks(client, platform):
    [me] = client.get("/api/v1/controllers").json()  # registered when it started
    assert (me["id"], me["this"], me["alive"]) == (platform.engine.worker_id, True, True)
    assert me["address"].endswith(":8080") and me["running_tasks"] == 0
    with platform.db.begin() as s:  # a controller that died long ago, holding a task
        past = utcnow() - timedelta(days=1)
        s.add(Controller(id="gone", address="10.0.0.9:8080", heartbeat_at=past))
        s.add(Task(kind="instance.stop", resource_type="instance", resource_id="x",
                   status="running", worker="gone"))  # fmt: skip
    assert platform.engine.leadership.hold("ha-monitor")
    listed = {c["id"]: c for c in client.get("/api/v1/controllers").json()}
    assert (listed["gone"]["alive"], listed["gone"]["this"]) == (False, False)
    assert (listed["gone"]["running_tasks"], listed["gone"]["leads"]) == (1, [])
    assert "ha-monitor" in listed[platform.engine.worker_id]["leads"]
