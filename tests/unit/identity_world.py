"""A control plane with two projects and one user in every role, for identity tests."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from fastapi.testclient import TestClient

from nubis.services.identity import approvals, signing

API = "/api/v1"
PASSWORD = "correct-horse-battery"
# role -> (user name, project role in p1, system role)
ROLES: dict[str, tuple[str, str | None, str | None]] = {
    "admin": ("p1-admin", "admin", None),
    "member": ("p1-member", "member", None),
    "reader": ("p1-reader", "reader", None),
    "system_admin": ("admin", None, "system_admin"),  # the bootstrap admin
    "security_admin": ("security", None, "security_admin"),  # the bootstrap one
    "auditor": ("auditor", None, "auditor"),
}


@dataclass
class Caller:
    """Requests as one user: ``caller.get("/instances")``."""

    client: TestClient
    token: str

    def request(self, method: str, path: str, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.token}", **kw.pop("headers", {})}
        return self.client.request(method, API + path, headers=headers, **kw)

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Any:
        return self.request("POST", path, **kw)

    def put(self, path: str, **kw: Any) -> Any:
        return self.request("PUT", path, **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self.request("DELETE", path, **kw)

    def upload(self, name: str, data: Any, path: str = "/images") -> Any:
        """A streamed upload (an image by default) named ``name``; the response."""
        headers = {"Content-Type": "application/octet-stream"}
        return self.post(path, params={"name": name}, content=data, headers=headers)


def login(client: TestClient, username: str, password: str, project: str | None = None) -> str:
    body: dict[str, Any] = {"username": username, "password": password}
    if project:
        body["project"] = project
    resp = client.post(f"{API}/auth/tokens", json=body)
    assert resp.status_code == 201, resp.text
    return resp.json()["token"]


def bootstrap_password(platform: Any, username: str) -> str:
    return (platform.settings.data_dir / f"{username}-password").read_text().strip()


def approve_on_server(platform: Any, approval_id: str) -> None:
    """What ``nubis server approve`` does: the server approves a pending request."""
    with platform.db.begin() as s:
        approvals.approve(s, approval_id, None)


def build(client: TestClient, platform: Any) -> dict[str, Caller]:
    """Projects p1 and p2; a user per role (see ROLES) and ``p2-member``, member of p2."""
    security = Caller(client, login(client, "security", bootstrap_password(platform, "security")))
    for name in ("p1", "p2"):
        assert security.post("/projects", json={"name": name}).status_code == 201
    callers: dict[str, Caller] = {"security_admin": security}
    for role, (username, project_role, system_role) in ROLES.items():
        if username in ("admin", "security"):
            continue
        body = {"username": username, "password": PASSWORD, "system_role": system_role}
        resp = security.post("/users", json=body)
        assert resp.status_code == 201, resp.text
        if system_role is not None:  # a second person approves it: the server itself
            approve_on_server(platform, resp.json()["pending_approval"]["id"])
        if project_role:
            resp = security.put(f"/projects/p1/members/{username}", json={"role": project_role})
            assert resp.status_code == 200, resp.text
        callers[role] = Caller(client, login(client, username, PASSWORD))
    body = {"username": "p2-member", "password": PASSWORD}
    assert security.post("/users", json=body).status_code == 201
    assert (
        security.put("/projects/p2/members/p2-member", json={"role": "member"}).status_code == 200
    )
    callers["p2-member"] = Caller(client, login(client, "p2-member", PASSWORD))
    admin_password = bootstrap_password(platform, "admin")
    callers["system_admin"] = Caller(client, login(client, "admin", admin_password))
    return callers


def signed(client, key, method, path, query=None, body=None, timestamp=None, tamper=None):  # noqa: ANN001, ANN201
    """A request signed with the API key ``key`` (``tamper``: query changed after)."""
    query = query or {}
    raw = json.dumps(body).encode() if body is not None else b""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    canonical = signing.canonical_request(
        method, API + path, list(query.items()), hashlib.sha256(raw).hexdigest(), stamp
    )
    signature = hmac.new(key["secret"].encode(), canonical.encode(), hashlib.sha256).hexdigest()
    if tamper:
        query = {**query, **tamper}
    url = API + path + (("?" + urlencode(query)) if query else "")
    headers = {
        "X-Nubis-Key": key["id"],
        "X-Nubis-Timestamp": stamp,
        "X-Nubis-Signature": signature,
    }
    if body is not None:
        headers["Content-Type"] = "application/json"
    return client.request(method, url, content=raw or None, headers=headers)
