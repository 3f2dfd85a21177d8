"""Attacks on accounts: a stolen API key outliving the password, a key minting keys,
password guessing through the password-change form, floods of wrong passwords
(per address and per user, counted exactly under parallel attempts on
PostgreSQL too), and a security administrator reaching for the system
administrator's powers."""

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from nubis.api.app import create_app
from nubis.cli.main import app as cli
from nubis.db.models import AuditRecord, User
from nubis.services.core.errors import TooManyRequests, Unauthorized
from nubis.services.identity import auth, throttle
from tests.unit.identity_world import API, PASSWORD, Caller, login, signed

NEW = "another-long-passphrase-9"


def test_api_keys_end_with_the_password_and_cannot_mint_keys(client, callers):
    member = callers["member"]
    key = member.post("/api-keys", json={"name": "robot"}).json()
    assert signed(client, key, "GET", "/instances").status_code == 200
    # a key cannot make keys: a leaked one could otherwise outlive its revocation
    minted = signed(client, key, "POST", "/api-keys", body={"name": "child"})
    assert minted.status_code == 403 and "login token" in minted.text
    assert [k["name"] for k in member.get("/api-keys").json()] == ["robot"]
    # the user changes the password: the key ends with it
    token = login(client, "p1-member", PASSWORD)
    me = Caller(client, token)
    body = {"current_password": PASSWORD, "new_password": NEW}
    assert me.put("/auth/password", json=body).status_code == 204
    refused = signed(client, key, "GET", "/instances")
    assert refused.status_code == 401 and "revoked" in refused.text
    # a reset by the security administrator ends the keys made since, too
    me = Caller(client, login(client, "p1-member", NEW))
    second = me.post("/api-keys", json={"name": "robot2"}).json()
    assert signed(client, second, "GET", "/instances").status_code == 200
    reset = callers["security_admin"].request(
        "PATCH", "/users/p1-member", json={"password": PASSWORD + "-reset"}
    )
    assert reset.status_code == 200, reset.text
    assert signed(client, second, "GET", "/instances").status_code == 401


def test_wrong_current_passwords_count_toward_the_lockout(client, platform, callers):
    me = Caller(client, login(client, "p1-reader", PASSWORD))
    for _ in range(5):  # the policy's max_failed_logins
        body = {"current_password": "not-the-password", "new_password": NEW}
        assert me.put("/auth/password", json=body).status_code == 400
    # locked: even the right password is refused, at login and in the form
    assert (
        client.post(
            f"{API}/auth/tokens", json={"username": "p1-reader", "password": PASSWORD}
        ).status_code
        == 401
    )
    body = {"current_password": PASSWORD, "new_password": NEW}
    assert me.put("/auth/password", json=body).status_code == 400
    # the server's own command lets the user in again
    result = unlock_on_server(platform, "p1-reader")
    assert result.exit_code == 0, result.output
    assert login(client, "p1-reader", PASSWORD)


def unlock_on_server(platform, *args: str):
    env = {
        "NUBIS_DATA_DIR": str(platform.settings.data_dir),
        "NUBIS_DATABASE_URL": platform.settings.db_url,
    }
    from nubis.config import get_settings

    get_settings.cache_clear()
    try:
        return CliRunner().invoke(cli, ["server", "unlock", *args], env=env)
    finally:
        get_settings.cache_clear()


def test_a_flood_from_one_address_is_cut_off_before_any_password_is_checked(
    platform, callers, monkeypatch
):
    platform.login_throttle = throttle.AddressThrottle(
        throttle.ThrottleSettings(max_failures=10, window_seconds=60)
    )
    checked = []
    real_verify = auth.passwords.verify
    monkeypatch.setattr(
        auth.passwords, "verify", lambda h, p: checked.append(p) or real_verify(h, p)
    )
    app = create_app(platform, manage_lifecycle=False)
    attacker = TestClient(app, client=("198.51.100.7", 40000))
    bystander = TestClient(app, client=("198.51.100.8", 40000))
    for i in range(10):
        body = {"username": f"nobody-{i}", "password": "guess"}
        assert attacker.post(f"{API}/auth/tokens", json=body).status_code == 401
    assert len(checked) == 10
    # blocked: refused at once, the right password included, nothing hashed
    for body in (
        {"username": "x", "password": "y"},
        {"username": "p1-admin", "password": PASSWORD},
    ):
        blocked = attacker.post(f"{API}/auth/tokens", json=body)
        assert blocked.status_code == 429 and "try again" in blocked.text
    assert len(checked) == 10
    # the block is in the audit log once, not each refused attempt
    with platform.db.read() as s:
        blocks = s.scalars(select(AuditRecord).where(AuditRecord.source_ip == "198.51.100.7"))
        assert sorted(r.status_code for r in blocks) == [401] * 10 + [429]
    # another address logs in as usual
    ok = bystander.post(f"{API}/auth/tokens", json={"username": "p1-admin", "password": PASSWORD})
    assert ok.status_code == 201
    # the server's own command lifts the block (the server sees it within RECHECK s)
    assert unlock_on_server(platform, "--address", "198.51.100.7").exit_code == 0
    time.sleep(platform.login_throttle.RECHECK)
    again = attacker.post(f"{API}/auth/tokens", json={"username": "p1-admin", "password": PASSWORD})
    assert again.status_code == 201


def test_parallel_failures_are_each_counted(platform, callers):
    """Failed logins are counted by the database itself: 4 at once from 4 addresses
    count 4 for the user (one short of the lockout), and 20 at once from one address
    block it exactly once."""
    limiter = throttle.AddressThrottle(throttle.ThrottleSettings(max_failures=1000))

    def attempt(args: tuple[str, str]) -> str:
        username, address = args
        try:
            auth.login(platform.db, username, "wrong-guess", 60, None, address, limiter)
        except (Unauthorized, TooManyRequests) as exc:
            return exc.code
        return "ok"

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(attempt, [("p1-member", f"203.0.113.{i}") for i in range(4)]))
    assert results == ["unauthorized"] * 4
    with platform.db.read() as s:
        user = s.scalar(select(User).where(User.username == "p1-member"))
        assert (user.failed_logins, user.locked_until) == (4, None)
    limiter = throttle.AddressThrottle(throttle.ThrottleSettings(max_failures=20))
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(attempt, [(f"ghost-{i}", "203.0.113.99") for i in range(20)]))
    assert results.count("unauthorized") == 20
    assert attempt(("ghost", "203.0.113.99")) == "too_many_requests"


def test_no_one_takes_the_system_administrators_powers_alone(client, platform, callers):
    security = callers["security_admin"]
    # nobody changes their own system role
    me = security.put("/users/security/system-role", json={"system_role": "system_admin"})
    assert me.status_code == 403 and "own system role" in me.text
    # a grant waits for a second security administrator
    asked = security.put("/users/p1-member/system-role", json={"system_role": "system_admin"})
    assert asked.status_code == 202, asked.text
    approval = asked.json()
    assert (approval["kind"], approval["status"]) == ("system-role", "pending")
    assert security.get("/users/p1-member").json()["system_role"] is None
    member = Caller(client, login(client, "p1-member", PASSWORD))
    assert member.get("/auth/whoami").json()["roles"] == ["member"]
    refused = security.post(f"/approvals/{approval['id']}/actions/approve")
    assert refused.status_code == 403 and "second security administrator" in refused.text
    # the system administrator cannot approve it either (nor see it)
    assert callers["system_admin"].get("/approvals").status_code == 403
    sysadmin_try = callers["system_admin"].post(f"/approvals/{approval['id']}/actions/approve")
    assert sysadmin_try.status_code == 403
    # a security administrator cannot take over the system administrator's account
    # by resetting its password
    reset = security.request("PATCH", "/users/admin", json={"password": "taken-over-12345"})
    assert reset.status_code == 202 and reset.json()["kind"] == "password-reset"
    takeover = client.post(
        f"{API}/auth/tokens", json={"username": "admin", "password": "taken-over-12345"}
    )
    assert takeover.status_code == 401
    admin_password = (platform.settings.data_dir / "admin-password").read_text().strip()
    assert login(client, "admin", admin_password)  # the real password still works
    # ... nor make a new system administrator account of their own
    made = security.post(
        "/users", json={"username": "mallory", "password": PASSWORD, "system_role": "system_admin"}
    )
    assert made.status_code == 201 and made.json()["system_role"] is None
    assert made.json()["pending_approval"]["system_role"] == "system_admin"
    # mallory has no project and no system role until approved: no token at all
    no_token = client.post(f"{API}/auth/tokens", json={"username": "mallory", "password": PASSWORD})
    assert no_token.status_code == 401
    # a second security administrator (made with the server's approval) decides
    second = security.post(
        "/users", json={"username": "sec2", "password": PASSWORD, "system_role": "security_admin"}
    ).json()
    from tests.unit.identity_world import approve_on_server

    approve_on_server(platform, second["pending_approval"]["id"])
    sec2 = Caller(client, login(client, "sec2", PASSWORD))
    pending = {a["id"] for a in sec2.get("/approvals").json()}
    assert approval["id"] in pending and reset.json()["id"] in pending
    assert sec2.post(f"/approvals/{reset.json()['id']}/actions/reject").status_code == 200
    done = sec2.post(f"/approvals/{approval['id']}/actions/approve")
    assert done.status_code == 200 and done.json()["status"] == "approved"
    promoted = Caller(client, login(client, "p1-member", PASSWORD))
    assert "system_admin" in promoted.get("/auth/whoami").json()["roles"]
    # decided requests cannot be decided again
    again = sec2.post(f"/approvals/{approval['id']}/actions/approve")
    assert again.status_code == 409
    assert login(client, "admin", admin_password)  # the rejected reset changed nothing


@pytest.mark.parametrize("header", ["x-csrf-token", "x-nubis-signature", "x-nubis-key"])
def test_non_ascii_headers_are_refused_not_crashed(client, callers, header):
    """Header values outside ASCII (latin-1 bytes) answer 4xx, never 500."""
    headers = {
        "x-nubis-key": b"key",
        "x-nubis-timestamp": b"1",
        "x-nubis-signature": b"sig",
    }
    if header == "x-csrf-token":
        headers = {"cookie": f"nubis_session={callers['member'].token}".encode()}
    headers[header] = "\u00e9\u00e8\u00ff".encode("latin-1")
    resp = client.request("POST", f"{API}/key-pairs", headers=headers, json={"name": "k"})
    assert 400 <= resp.status_code < 500, resp.text
