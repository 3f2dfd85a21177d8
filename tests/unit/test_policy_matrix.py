"""Every API route x every role: allowed or refused exactly as the policy table says,
and another project's resources are "not found" for every resource type."""

import re

from nubis.services.identity import policy
from tests.unit.identity_world import ROLES
from tests.unit.test_api_contract import qcow2

PUBLIC = {"GET /health", "POST /auth/tokens"}


def routes(client) -> list[tuple[str, str]]:
    """(method, path template) of every operation the API serves."""
    spec = client.get("/api/v1/openapi.json").json()
    return [
        (method.upper(), path.removeprefix("/api/v1"))
        for path, ops in spec["paths"].items()
        for method in ops
    ]


def test_every_route_is_in_the_policy_table_and_nothing_else_is(client):
    served = {f"{m} {p}" for m, p in routes(client)} - PUBLIC
    assert served - set(policy.POLICY) == set(), "routes nobody may call"
    assert set(policy.POLICY) - served == set(), "policy rows for routes that do not exist"


def test_every_role_is_allowed_or_refused_exactly_as_the_policy_says(client, callers):
    assert set(ROLES) <= set(callers)
    mismatches = []
    for method, template in routes(client):
        key = f"{method} {template}"
        if key in PUBLIC or key == "DELETE /auth/tokens/current":
            continue
        # placeholders that name nothing: an allowed caller gets 4xx other than 401/403
        path = re.sub(r"\{[^}]+\}", "no-such-thing", template)
        for role in ROLES:
            resp = callers[role].request(method, path, json={})
            refused = resp.status_code == 403
            expected = role not in policy.POLICY[key]
            if resp.status_code == 401 or refused != expected:
                mismatches.append(f"{key} as {role}: {resp.status_code} {resp.text[:80]}")
    assert mismatches == []


def test_logout_is_allowed_to_every_role(client, callers):
    for role in ROLES:
        caller = callers[role]
        assert caller.delete("/auth/tokens/current").status_code == 204
        assert caller.get("/auth/whoami").status_code == 401  # the token is gone


def test_roles_are_reported_and_exclusive_system_roles_hold_no_project_role(callers):
    me = callers["member"].get("/auth/whoami").json()
    assert me["roles"] == ["member"] and me["project_role"] == "member"
    assert callers["system_admin"].get("/auth/whoami").json()["roles"] == ["admin", "system_admin"]
    security = callers["security_admin"]
    assert security.get("/auth/whoami").json()["roles"] == ["security_admin"]
    refused = security.put("/projects/p1/members/auditor", json={"role": "admin"})
    assert refused.status_code == 409 and "separation of duties" in refused.text
    refused = security.put("/users/p1-member/system-role", json={"system_role": "auditor"})
    assert refused.status_code == 409
    names = {m["username"]: m["role"] for m in security.get("/projects/p1/members").json()}
    assert names == {"p1-admin": "admin", "p1-member": "member", "p1-reader": "reader"}


def test_another_projects_resources_are_not_found(client, platform, callers, tmp_path):
    owner, other = callers["member"], callers["p2-member"]
    image = upload_as(client, owner, "private-img", qcow2(tmp_path, "p.qcow2"))
    created = {
        "key-pairs": owner.post("/key-pairs", json={"name": "k"}),
        "security-groups": owner.post("/security-groups", json={"name": "sg"}),
        "rule-groups": owner.post("/rule-groups", json={"name": "rg", "policy": "affinity"}),
        "instances": owner.post(
            "/instances", json={"name": "vm", "image": image["id"], "flavor": "m1.tiny"}
        ),
    }
    for kind, resp in created.items():
        assert resp.status_code in (201, 202), (kind, resp.text)
    refs = {kind: resp.json()["id"] for kind, resp in created.items()}
    refs["images"] = image["id"]
    names = {"key-pairs": "k", "security-groups": "sg", "rule-groups": "rg", "instances": "vm"}
    names["images"] = "private-img"
    for kind, rid in refs.items():
        for ref in (rid, names[kind]):
            assert other.get(f"/{kind}/{ref}").status_code == 404, kind
            assert other.delete(f"/{kind}/{ref}").status_code == 404, kind
        body = other.get(f"/{kind}").json()
        listed = body["items"] if isinstance(body, dict) else body  # key pairs: a plain list
        assert rid not in [row["id"] for row in listed], kind
        assert owner.get(f"/{kind}/{rid}").status_code == 200, kind
    task_id = created["instances"].json()["task_id"]
    assert other.get(f"/tasks/{task_id}").status_code == 404
    assert other.post("/instances/vm/actions/stop").status_code == 404
    launch = {"name": "mine", "image": image["id"], "flavor": "m1.tiny"}
    assert other.post("/instances", json=launch).status_code == 404  # the image too
    # the system administrator sees and finds them all
    sysadmin = callers["system_admin"]
    for kind, rid in refs.items():
        assert sysadmin.get(f"/{kind}/{rid}").status_code == 200, kind


def upload_as(client, caller, name: str, data: bytes) -> dict:
    resp = caller.upload(name, data)
    assert resp.status_code == 201, resp.text
    return resp.json()


def test_public_images_are_the_system_administrators(client, callers, tmp_path):
    data = qcow2(tmp_path, "pub.qcow2")
    member = callers["member"]
    refused = member.post(
        "/images",
        params={"name": "pub", "public": "true"},
        content=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert refused.status_code == 403
    sysadmin = callers["system_admin"]
    resp = sysadmin.post(
        "/images",
        params={"name": "pub", "public": "true"},
        content=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert resp.status_code == 201 and resp.json()["project_id"] is None
    assert callers["p2-member"].get("/images/pub").status_code == 200
    assert member.delete("/images/pub").status_code == 403
    assert sysadmin.delete("/images/pub").status_code == 204


def _allowed_paths(role: str) -> set[str]:
    return {key for key in policy.POLICY if policy.allowed(frozenset({role}), key)}


def test_the_table_separates_duties():
    """Stated apart from the table, so a wrong row in it fails here."""
    own = ("/auth/", "/api-keys")
    security = _allowed_paths("security_admin")
    assert all(
        k.split(" ")[1].startswith(("/users", "/projects", "/password-policy", "/approvals", *own))
        for k in security
    )
    assert not any("/quotas" in k and k.startswith("PUT") for k in security)
    auditor = _allowed_paths("auditor")
    assert all(k.split(" ")[1].startswith(("/audit", *own)) for k in auditor)
    assert {"GET /audit", "GET /audit/export"} <= auditor
    sysadmin = _allowed_paths("system_admin")
    for grant in (
        "POST /users",
        "PUT /users/{ref}/system-role",
        "PUT /projects/{ref}/members/{user}",
        "DELETE /projects/{ref}/members/{user}",
        "POST /approvals/{approval_id}/actions/{action}",
        "GET /audit",
    ):
        assert grant not in sysadmin, grant
    assert {"POST /hosts", "POST /storage-pools", "PUT /projects/{ref}/quotas"} <= sysadmin
    reader = _allowed_paths("reader")
    assert all(k.startswith("GET") or k.split(" ")[1].startswith(own) for k in reader)
    for role in ("admin", "member", "reader"):
        assert not any(
            k.split(" ")[1].startswith(("/hosts", "/users", "/audit")) for k in _allowed_paths(role)
        ), role
