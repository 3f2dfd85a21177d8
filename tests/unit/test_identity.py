"""Passwords, lockout, disabling, signed requests, quotas and the audit log, through
the REST API of a control plane (libvirt's test:/// driver as its host)."""

import csv
import io
import json
import time
from concurrent.futures import ThreadPoolExecutor

from tests.unit.identity_world import API, PASSWORD, Caller, login, signed
from tests.unit.test_api_contract import qcow2


def try_login(client, username, password):
    return client.post(f"{API}/auth/tokens", json={"username": username, "password": password})


def test_lockout_after_failed_logins_and_unlock(client, callers):
    security = callers["security_admin"]
    policy = security.put("/password-policy", json={"max_failed_logins": 3}).json()
    assert policy["max_failed_logins"] == 3
    for _ in range(3):
        assert try_login(client, "p1-member", "wrong-password-1").status_code == 401
    # locked: even the right password is refused, with the same answer
    locked = try_login(client, "p1-member", PASSWORD)
    assert locked.status_code == 401 and "invalid username or password" in locked.text
    assert security.get("/users/p1-member").json()["locked_until"] is not None
    assert security.post("/users/p1-member/actions/unlock").status_code == 200
    assert try_login(client, "p1-member", PASSWORD).status_code == 201


def test_password_policy_length_name_and_reuse(client, callers):
    security = callers["security_admin"]
    for password, fragment in (("short", "at least 12"), ("x" * 1025, "at most")):
        resp = security.request("PATCH", "/users/p1-member", json={"password": password})
        assert resp.status_code in (400, 422) and fragment.split()[0] in resp.text
    bad = security.post("/users", json={"username": "same-name-user", "password": "same-name-user"})
    assert bad.status_code == 400 and "user name" in bad.text
    member = callers["member"]
    change = {"current_password": PASSWORD, "new_password": PASSWORD}
    reuse = member.put("/auth/password", json=change)
    assert reuse.status_code == 400 and "differ" in reuse.text
    wrong = member.put("/auth/password", json={**change, "current_password": "nope"})
    assert wrong.status_code == 400
    new = "a-brand-new-passphrase"
    assert member.put("/auth/password", json={**change, "new_password": new}).status_code == 204
    assert member.get("/auth/whoami").status_code == 401  # its tokens ended
    assert try_login(client, "p1-member", PASSWORD).status_code == 401
    token = login(client, "p1-member", new)
    back = Caller(client, token).put(
        "/auth/password", json={"current_password": new, "new_password": PASSWORD}
    )
    assert back.status_code == 400 and "differ" in back.text  # an earlier one


def test_disabling_a_user_stops_its_tokens_and_keys(client, callers):
    member = callers["member"]
    key = member.post("/api-keys", json={"name": "ci"}).json()
    security = callers["security_admin"]
    assert security.post("/users/p1-member/actions/disable").json()["enabled"] is False
    assert member.get("/auth/whoami").status_code == 401
    assert signed(client, key, "GET", "/instances").status_code == 401
    assert try_login(client, "p1-member", PASSWORD).status_code == 401
    assert security.post("/users/p1-member/actions/enable").status_code == 200
    assert signed(client, key, "GET", "/instances").status_code == 200
    last = security.post("/users/security/actions/disable")
    assert last.status_code == 409  # never lock out the only security administrator


def test_login_scoped_to_a_project(client, callers):
    security = callers["security_admin"]
    security.put("/projects/p2/members/p1-member", json={"role": "reader"})
    token = login(client, "p1-member", PASSWORD, project="p2")
    me = Caller(client, token).get("/auth/whoami").json()
    assert me["project_role"] == "reader"
    refused = client.post(
        f"{API}/auth/tokens",
        json={"username": "p2-member", "password": PASSWORD, "project": "p1"},
    )
    assert refused.status_code == 401 and "no role in project" in refused.text


def test_signed_requests(client, callers):
    member = callers["member"]
    created = member.post("/api-keys", json={"name": "robot"})
    assert created.status_code == 201
    key = created.json()
    assert "secret" not in member.get("/api-keys").json()[0]
    ok = signed(client, key, "GET", "/instances", query={"limit": "5"})
    assert ok.status_code == 200, ok.text
    me = signed(client, key, "GET", "/auth/whoami").json()
    assert me["username"] == "p1-member" and me["api_key_id"] == key["id"]
    made = signed(client, key, "POST", "/key-pairs", body={"name": "from-robot"})
    assert made.status_code == 201, made.text
    # a changed parameter, an old timestamp, a replay, a revoked key: all 401
    changed = signed(client, key, "GET", "/instances", {"limit": "5"}, tamper={"limit": "6"})
    assert changed.status_code == 401 and "does not match" in changed.text
    old = signed(client, key, "GET", "/instances", timestamp=int(time.time()) - 3600)
    assert old.status_code == 401 and "timestamp" in old.text
    stamp = int(time.time())
    first = signed(client, key, "GET", "/networks", timestamp=stamp)
    assert first.status_code == 200
    replay = signed(client, key, "GET", "/networks", timestamp=stamp)
    assert replay.status_code == 401 and "replay" in replay.text
    body_changed = signed(client, key, "POST", "/key-pairs", body={"name": "x1"})
    assert body_changed.status_code == 201
    assert member.delete(f"/api-keys/{key['id']}").status_code == 204
    revoked = signed(client, key, "GET", "/instances")
    assert revoked.status_code == 401 and "revoked" in revoked.text
    # policy applies to keys too: a reader's key cannot change anything
    reader_key = callers["reader"].post("/api-keys", json={"name": "r"}).json()
    assert signed(client, reader_key, "POST", "/key-pairs", body={"name": "z"}).status_code == 403


def test_api_key_secret_is_encrypted_at_rest(callers, platform):
    from sqlalchemy import select

    from nubis.db.models import ApiKey

    key = callers["member"].post("/api-keys", json={"name": "k"}).json()
    with platform.db.begin() as s:
        stored = s.scalar(select(ApiKey.secret_encrypted).where(ApiKey.id == key["id"]))
    assert key["secret"] not in stored


def test_quota_holds_under_parallel_creates(client, callers, tmp_path):
    member, sysadmin = callers["member"], callers["system_admin"]
    image = member.post(
        "/images",
        params={"name": "q-img"},
        content=qcow2(tmp_path, "q.qcow2"),
        headers={"Content-Type": "application/octet-stream"},
    ).json()
    assert member.put("/projects/p1/quotas", json={"instances": 1}).status_code == 403
    resp = sysadmin.put("/projects/p1/quotas", json={"instances": 2})
    assert resp.status_code == 200 and resp.json()["quotas"]["instances"]["limit"] == 2
    bad = sysadmin.put("/projects/p1/quotas", json={"instances": -5, "vcpus": 3})
    assert bad.status_code == 400
    assert sysadmin.get("/projects/p1/quotas").json()["quotas"]["vcpus"]["limit"] == 40

    def create(i: int) -> int:
        body = {"name": f"q{i}", "image": image["id"], "flavor": "m1.tiny"}
        return member.post("/instances", json=body).status_code

    with ThreadPoolExecutor(max_workers=6) as pool:
        codes = sorted(pool.map(create, range(6)))
    assert codes == [202, 202, 409, 409, 409, 409]
    usage = member.get("/quotas").json()["quotas"]["instances"]
    assert usage == {"limit": 2, "in_use": 2}
    over = member.post("/instances", json={"name": "q9", "image": image["id"], "flavor": "m1.tiny"})
    assert over.status_code == 409 and "quota exceeded" in over.text
    # another project is not held back by this one's quota
    assert callers["p2-member"].get("/quotas").json()["quotas"]["instances"]["in_use"] == 0
    # unlimited: creates count nothing (and take no lock); a limit set later holds again
    unlimited = {"instances": -1, "vcpus": -1, "memory_mib": -1}
    assert sysadmin.put("/projects/p1/quotas", json=unlimited).status_code == 200
    with ThreadPoolExecutor(max_workers=6) as pool:
        codes = sorted(pool.map(create, range(10, 16)))
    assert codes == [202] * 6
    assert member.get("/quotas").json()["quotas"]["instances"]["in_use"] == 8
    assert sysadmin.put("/projects/p1/quotas", json={"instances": 8}).status_code == 200
    again = member.post(
        "/instances", json={"name": "q20", "image": image["id"], "flavor": "m1.tiny"}
    )
    assert again.status_code == 409 and "8 in use + 1 asked > limit 8" in again.text


def test_audit_log_records_changes_and_logins_and_exports(client, callers):
    member, auditor = callers["member"], callers["auditor"]
    assert member.post("/key-pairs", json={"name": "audited"}).status_code == 201
    assert member.post("/key-pairs", json={"name": "bad name!"}).status_code == 400
    assert try_login(client, "p1-member", "not-the-password").status_code == 401
    assert member.get("/audit").status_code == 403
    records = auditor.get("/audit", params={"username": "p1-member", "limit": 1000}).json()
    rows = records["items"]
    created = [r for r in rows if r["action"] == "POST /key-pairs" and r["success"]]
    assert len(created) == 1
    rec = created[0]
    assert rec["resource_type"] == "key-pairs" and rec["resource_id"]
    assert rec["roles"] == "member" and rec["status_code"] == 201
    assert rec["source_ip"] and rec["project_id"]
    failed = [r for r in rows if r["action"] == "POST /key-pairs" and not r["success"]]
    assert [r["status_code"] for r in failed] == [400]
    logins = [r for r in rows if r["action"] == "POST /auth/tokens"]
    assert [r["success"] for r in logins] == [True, False]
    assert all(r["params"]["password"] == "***" for r in logins)
    assert "not-the-password" not in json.dumps(rows)
    exported = auditor.get("/audit/export", params={"format": "csv", "username": "p1-member"})
    assert exported.status_code == 200
    table = list(csv.DictReader(io.StringIO(exported.text)))
    assert len(table) == len(rows) and table[0]["action"] == rows[0]["action"]
    lines = auditor.get("/audit/export", params={"format": "json"}).text.splitlines()
    assert len(lines) == auditor.get("/audit").json()["total"]
    assert auditor.get("/audit/export", params={"format": "xml"}).status_code == 400
    # append-only: the API has no way to change or delete a record
    for method in ("DELETE", "PUT", "PATCH"):
        assert auditor.request(method, "/audit").status_code == 405
    assert callers["system_admin"].get("/audit").status_code == 403


def test_housekeeping_removes_only_old_audit_records_and_long_dead_controllers(callers, platform):
    from datetime import timedelta

    from sqlalchemy import func, select

    from nubis.db.models import AuditRecord, Controller, utcnow
    from nubis.services.housekeeping import Housekeeping

    with platform.db.begin() as s:
        old = AuditRecord(
            created_at=utcnow() - timedelta(days=400),
            action="POST /old",
            method="POST",
            path="/old",
            success=True,
            status_code=201,
        )
        s.add(old)
        s.flush()
        old_id = old.id
        recent = s.scalar(select(func.count()).select_from(AuditRecord))
    with platform.db.begin() as s:  # a controller that died long ago, one lately
        for name, days in (("long-gone", 8), ("lately", 1)):
            beat = utcnow() - timedelta(days=days)
            s.add(Controller(id=name, address="10.0.0.9:8080", heartbeat_at=beat))
    Housekeeping(platform.db, audit_retention_days=365).run_once()
    with platform.db.begin() as s:
        assert s.get(Controller, "long-gone") is None and s.get(Controller, "lately")
        assert s.get(AuditRecord, old_id) is None
        assert s.scalar(select(func.count()).select_from(AuditRecord)) == recent - 1


def test_cross_project_volumes_networks_ports_and_snapshots_are_not_found(callers, tmp_path):
    import os

    sysadmin, owner, other = callers["system_admin"], callers["member"], callers["p2-member"]
    path = tmp_path / "pool"
    os.makedirs(path)
    pool = sysadmin.post(
        "/storage-pools", json={"name": "p", "kind": "dir", "path": str(path), "host": "fake"}
    )
    assert pool.status_code == 201, pool.text
    vol = owner.post("/volumes", json={"name": "v", "size_gib": 1})
    assert vol.status_code == 202, vol.text
    net = owner.post(
        "/networks", json={"name": "n", "mode": "isolated", "subnets": [{"cidr": "10.77.0.0/24"}]}
    )
    assert net.status_code == 201, net.text
    for kind, body in (("volumes", vol.json()), ("networks", net.json())):
        for ref in (body["id"], body["name"]):
            assert other.get(f"/{kind}/{ref}").status_code == 404
            assert other.delete(f"/{kind}/{ref}").status_code == 404
        assert other.get(f"/{kind}").json()["total"] == 0
        assert owner.get(f"/{kind}/{body['id']}").status_code == 200
    assert other.get(f"/volumes/{vol.json()['id']}/snapshots").status_code == 404
    assert (
        other.post(f"/volumes/{vol.json()['id']}/snapshots", json={"name": "s"}).status_code == 404
    )
    # an instance on the network: its port, its snapshots
    image = owner.post(
        "/images",
        params={"name": "net-img"},
        content=qcow2(tmp_path, "n.qcow2"),
        headers={"Content-Type": "application/octet-stream"},
    ).json()
    vm = owner.post(
        "/instances",
        json={
            "name": "vm",
            "image": image["id"],
            "flavor": "m1.tiny",
            "networks": [{"network": "n"}],
        },
    )
    assert vm.status_code == 202, vm.text
    vm_id = vm.json()["id"]
    port_id = owner.get(f"/instances/{vm_id}/ports").json()[0]["id"]
    assert owner.get(f"/ports/{port_id}").status_code == 200
    assert other.get(f"/ports/{port_id}").status_code == 404
    assert (
        other.put(f"/ports/{port_id}/security-groups", json={"security_groups": []}).status_code
        == 404
    )
    assert other.get(f"/instances/{vm_id}/ports").status_code == 404
    assert other.get(f"/networks/{net.json()['id']}/ports").status_code == 404
    assert other.get(f"/instances/{vm_id}/snapshots").status_code == 404
    assert other.get(f"/instances/{vm_id}/volumes").status_code == 404
    assert other.get(f"/instances/{vm_id}/console-log").status_code == 404


def test_only_an_empty_project_can_be_deleted(callers):
    security, p2 = callers["security_admin"], callers["p2-member"]
    assert p2.get("/security-groups").json()["total"] == 1  # its default group
    assert p2.post("/key-pairs", json={"name": "left-behind"}).status_code == 201
    refused = security.delete("/projects/p2")
    assert refused.status_code == 409 and "key pairs" in refused.text
    assert security.get("/projects/p2").status_code == 200
    assert p2.delete("/key-pairs/left-behind").status_code == 204
    assert security.delete("/projects/p2").status_code == 204
    assert security.get("/projects/p2").status_code == 404
    assert p2.get("/auth/whoami").status_code == 401  # its token went with the project
    assert security.delete("/projects/p2").status_code == 404


def test_first_uses_of_a_projects_default_group_at_once_all_succeed(callers):
    """Eight parallel first requests of a new project race to make its default group."""
    member = callers["p2-member"]
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda _i: member.get("/security-groups/default"), range(8)))
    assert [a.status_code for a in answers] == [200] * 8
    assert len({a.json()["id"] for a in answers}) == 1
    assert member.get("/security-groups").json()["total"] == 1
