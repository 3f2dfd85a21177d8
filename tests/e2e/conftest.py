"""Browser tests: a real Nubis server on the real libvirtd, driven through Debian's
chromium (headless) by Playwright. Screenshots of the main pages are saved in
``test-artifacts/e2e`` (or ``$NUBIS_TEST_ARTIFACTS``)."""

import base64
import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from playwright.sync_api import Browser, Page, sync_playwright

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
def browser_netns() -> Iterator[tuple[str, str]]:
    """A network namespace of the browser's own, reaching this machine through one
    veth pair: (its name, the address of this machine's end). Chromium aborts every
    load in flight when any network interface it sees changes (net::ERR_NETWORK_CHANGED)
    and the other test worker adds and removes interfaces all the time (bridges,
    veths, namespaces); in here the browser sees only its loopback and its veth."""
    slot = os.getpid() % 64  # one /30 of 172.31.254.0/24 per worker process
    name, host_end, ns_end = f"nubis-e2e-{os.getpid()}", f"nbe{os.getpid()}h", f"nbe{os.getpid()}n"
    host_ip, ns_ip = f"172.31.254.{4 * slot + 1}", f"172.31.254.{4 * slot + 2}"
    commands = [
        ["ip", "netns", "add", name],
        ["ip", "link", "add", host_end, "type", "veth", "peer", "name", ns_end],
        ["ip", "link", "set", ns_end, "netns", name],
        ["ip", "addr", "add", f"{host_ip}/30", "dev", host_end],
        ["ip", "link", "set", host_end, "up"],
        ["ip", "-n", name, "addr", "add", f"{ns_ip}/30", "dev", ns_end],
        ["ip", "-n", name, "link", "set", ns_end, "up"],
        ["ip", "-n", name, "link", "set", "lo", "up"],
    ]
    try:
        for command in commands:
            subprocess.run(command, check=True, capture_output=True)
        yield name, host_ip
    finally:
        subprocess.run(["ip", "link", "del", host_end], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory, browser_netns):
    env = {
        "NUBIS_CONSOLE_TICKET_SECONDS": str(TICKET_SECONDS),
        # reached by the browser through its namespace's veth, by the tests on loopback
        "NUBIS_LISTEN_HOST": "0.0.0.0",
    }
    with serving(tmp_path_factory, NUBIS_METRICS_INTERVAL_SECONDS="2", **env) as srv:
        yield srv


@pytest.fixture(scope="module")
def site(server, browser_netns) -> str:
    """The server's address as the browser reaches it."""
    return f"https://{browser_netns[1]}:{server.port}"


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
def browser(server, browser_netns, tmp_path_factory) -> Browser:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: ./setup.sh test installs Debian's chromium")
    pin = f"--ignore-certificate-errors-spki-list={spki_pin(server.ca_file)}"
    # Playwright talks to Chromium over pipes, which cross into the namespace
    launcher = tmp_path_factory.mktemp("chromium") / "chromium"
    launcher.write_text(f'#!/bin/sh\nexec ip netns exec {browser_netns[0]} {CHROMIUM} "$@"\n')
    launcher.chmod(0o755)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(launcher), headless=True, args=[*FLAGS, pin])
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


def sign_in(page: Page, base: str, username: str, password: str) -> None:
    page.goto(base + "/")
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/dashboard")
