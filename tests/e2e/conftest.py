"""Browser tests: a real Nubis server on the real libvirtd, driven through Debian's
chromium (headless) by Playwright. Screenshots of the main pages are saved in
``test-artifacts/e2e`` (or ``$NUBIS_TEST_ARTIFACTS``)."""

import base64
import hashlib
import os
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from playwright.sync_api import Browser, Error, Page, Response, sync_playwright

from tests.integration.server import serving

CHROMIUM = "/usr/bin/chromium"
# as root, on a machine with no way out: no sandbox, no background traffic
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("NUBIS_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "e2e"
TICKET_SECONDS = 8  # short console tickets, so that expiry is seen within the test
PASSWORD = "e2e-correct-horse-battery"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    env = {"NUBIS_CONSOLE_TICKET_SECONDS": str(TICKET_SECONDS)}
    with serving(tmp_path_factory, NUBIS_METRICS_INTERVAL_SECONDS="2", **env) as srv:
        yield srv


@pytest.fixture(scope="module")
def reader(server) -> str:
    """A user with the reader role in the admin's project; its user name."""
    password = (server.data_dir / "security-password").read_text().strip()
    security = server.client.post(
        "/auth/tokens", json={"username": "security", "password": password}
    ).json()["token"]
    auth = {"Authorization": f"Bearer {security}"}
    made = server.client.post(
        "/users", json={"username": "viewer", "password": PASSWORD}, headers=auth
    )
    assert made.status_code == 201, made.text
    role = server.client.put(
        "/projects/admin/members/viewer", json={"role": "reader"}, headers=auth
    )
    assert role.status_code == 200, role.text
    return "viewer"


def spki_pin(cert_file: Path) -> str:
    """The base64 SHA-256 of a certificate's public key: Chromium trusts the server's
    own certificate by it (a pin, not a blanket 'ignore certificate errors')."""
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@pytest.fixture(scope="module")
def browser(server) -> Browser:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: ./setup.sh test installs Debian's chromium")
    pin = f"--ignore-certificate-errors-spki-list={spki_pin(server.ca_file)}"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[*FLAGS, pin])
        yield b
        b.close()


@pytest.fixture
def page(browser) -> Page:
    """A fresh browser context (no cookies) at desktop size, 1280x800."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(20_000)
    pg = context.new_page()
    yield pg
    context.close()


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def goto(page: Page, url: str) -> Response | None:
    """``page.goto``, again when Chromium aborted the load because the machine's network
    interfaces changed: Chromium watches every interface and aborts whatever is in
    flight when any of them changes (net::ERR_NETWORK_CHANGED, Chromium's behaviour
    on Linux), and the other test worker adds and removes interfaces (a devcluster's
    bridges, a network's veths). Nothing of Nubis is involved: the load never left
    the browser. Any other error is raised."""
    for _ in range(3):
        try:
            return page.goto(url)
        except Error as exc:
            if "ERR_NETWORK_CHANGED" not in str(exc):
                raise
    return page.goto(url)


def sign_in(page: Page, base: str, username: str, password: str) -> None:
    goto(page, base + "/")
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/dashboard")
