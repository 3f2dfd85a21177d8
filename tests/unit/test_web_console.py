"""The web console's sessions, CSRF protection and pages, against a real database
(the browser-level checks are in tests/e2e)."""

import re

import pytest
from fastapi.testclient import TestClient

from nubis.api.app import create_app
from nubis.services.identity import policy
from tests.unit.identity_world import PASSWORD, ROLES, bootstrap_password

PAGES = {
    "/dashboard": "GET /auth/whoami",
    "/instances": "GET /instances",
    "/instances/new": "POST /instances",
    "/hosts": "GET /hosts",
    "/images": "GET /images",
    "/flavors": "GET /flavors",
    "/volumes": "GET /volumes",
    "/networks": "GET /networks",
    "/routers": "GET /routers",
    "/floating-ips": "GET /floating-ips",
    "/projects": "GET /projects",
    "/users": "GET /users",
    "/audit": "GET /audit",
    "/events": "GET /events",
    "/alarms": "GET /alarms",
    "/usage": "GET /usage/report",
}


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html) or re.search(
        r'name="csrf-token" content="([^"]+)"', html
    )
    assert found, "the page carries no CSRF token"
    return found.group(1)


def browser_login(client: TestClient, username: str, password: str) -> TestClient:
    form = client.get("/login")
    assert form.status_code == 200
    resp = client.post(
        "/login",
        data={"username": username, "password": password, "csrf_token": csrf_of(form.text)},
        follow_redirects=False,
    )
    assert resp.status_code == 303, resp.text
    return client


@pytest.fixture
def browser(platform, callers):
    """A second client, like a browser: it keeps cookies, holds no bearer token."""
    with TestClient(create_app(platform, manage_lifecycle=False)) as c:
        yield c


def test_login_sets_an_httponly_samesite_session_cookie(browser, platform):
    form = browser.get("/login")
    resp = browser.post(
        "/login",
        data={
            "username": "admin",
            "password": bootstrap_password(platform, "admin"),
            "csrf_token": csrf_of(form.text),
            "next": "/instances",
        },
        follow_redirects=False,
    )
    assert resp.status_code == 303 and resp.headers["location"] == "/instances"
    cookie = next(c for c in resp.headers.get_list("set-cookie") if c.startswith("nubis_session="))
    assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
    assert browser.get("/api/v1/auth/whoami").json()["username"] == "admin"
    assert browser.get("/dashboard").status_code == 200


def test_login_without_the_form_token_is_refused(browser, platform):
    browser.get("/login")
    resp = browser.post(
        "/login",
        data={"username": "admin", "password": bootstrap_password(platform, "admin")},
        follow_redirects=False,
    )
    assert resp.status_code == 403
    assert "nubis_session" not in browser.cookies


def test_wrong_password_shows_the_form_again(browser):
    form = browser.get("/login")
    resp = browser.post(
        "/login",
        data={"username": "admin", "password": "wrong", "csrf_token": csrf_of(form.text)},
        follow_redirects=False,
    )
    assert resp.status_code == 401
    assert "invalid username or password" in resp.text
    assert "nubis_session" not in browser.cookies


def test_login_never_redirects_to_another_site(browser, platform):
    form = browser.get("/login?next=//evil.example/")
    assert 'name="next" value="/dashboard"' in form.text
    resp = browser.post(
        "/login",
        data={
            "username": "admin",
            "password": bootstrap_password(platform, "admin"),
            "csrf_token": csrf_of(form.text),
            "next": "https://evil.example/",
        },
        follow_redirects=False,
    )
    assert resp.headers["location"] == "/dashboard"


def test_pages_need_a_session(browser):
    resp = browser.get("/instances?status=running", follow_redirects=False)
    assert resp.status_code == 303
    assert resp.headers["location"] == "/login?next=/instances%3Fstatus%3Drunning"
    background = browser.get("/instances", headers={"HX-Request": "true"})
    assert background.status_code == 204 and background.headers["HX-Redirect"].startswith("/login")


def test_a_change_by_cookie_needs_the_csrf_token(browser, callers):
    browser_login(browser, "p1-member", PASSWORD)
    token = csrf_of(browser.get("/dashboard").text)
    body = {"name": "k1", "public_key": None}
    for headers in ({}, {"X-CSRF-Token": "0" * 64}):
        refused = browser.post("/api/v1/key-pairs", json=body, headers=headers)
        assert refused.status_code == 403, refused.text
        assert "CSRF" in refused.json()["error"]["message"]
    assert callers["member"].get("/key-pairs").json() == []  # nothing was created
    made = browser.post("/api/v1/key-pairs", json=body, headers={"X-CSRF-Token": token})
    assert made.status_code == 201, made.text
    assert [k["name"] for k in callers["member"].get("/key-pairs").json()] == ["k1"]


def test_the_csrf_token_of_one_session_does_not_fit_another(browser, platform, callers):
    browser_login(browser, "p1-member", PASSWORD)
    with TestClient(create_app(platform, manage_lifecycle=False)) as other:
        browser_login(other, "p1-admin", PASSWORD)
        foreign = csrf_of(other.get("/dashboard").text)
    resp = browser.post("/api/v1/key-pairs", json={"name": "k2"}, headers={"X-CSRF-Token": foreign})
    assert resp.status_code == 403


def test_logout_ends_the_token(browser, callers):
    browser_login(browser, "p1-member", PASSWORD)
    session = browser.cookies["nubis_session"]
    refused = browser.post("/logout", data={}, follow_redirects=False)
    assert refused.status_code == 403  # no CSRF token: still signed in
    assert browser.get("/api/v1/auth/whoami").status_code == 200
    token = csrf_of(browser.get("/dashboard").text)
    resp = browser.post("/logout", data={"csrf_token": token}, follow_redirects=False)
    assert resp.status_code == 303 and resp.headers["location"] == "/login"
    stale = browser.get("/api/v1/auth/whoami", headers={"Authorization": f"Bearer {session}"})
    assert stale.status_code == 401


@pytest.mark.parametrize("role", sorted(ROLES))
def test_every_page_follows_the_policy(browser, platform, role):
    username = ROLES[role][0]
    bootstrap = username in ("admin", "security")
    password = bootstrap_password(platform, username) if bootstrap else PASSWORD
    browser_login(browser, username, password)
    roles = policy.effective_roles(ROLES[role][1], ROLES[role][2])
    dashboard = browser.get("/dashboard").text
    for path, action in PAGES.items():
        resp = browser.get(path)
        expected = 200 if policy.allowed(roles, action) else 403
        assert resp.status_code == expected, (role, path, resp.text[:300])
        listed = f'href="{path}"' in dashboard
        if path != "/instances/new":
            assert listed == policy.allowed(roles, action), (role, path)
