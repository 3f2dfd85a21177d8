"""The VNC console of a real guest through Nubis's websocket proxy: one-time tickets,
a password per ticket, VNC on loopback only."""

import re
import subprocess
import uuid

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.integration.vnc import Rfb, tls, ws_url

pytestmark = pytest.mark.integration


def ticket_for(server, ref: str) -> dict:
    resp = server.client.post(f"/instances/{ref}/console")
    assert resp.status_code == 201, resp.text
    return resp.json()


def refused(server, url: str, **kw) -> bool:
    try:
        with connect(url, subprotocols=["binary"], open_timeout=10, ssl=tls(server), **kw):
            return False
    except InvalidStatus as exc:
        return exc.response.status_code == 403


def test_console_tickets_open_the_guests_screen_once(server):
    resp = server.client.post(
        "/instances", json={"name": "console-vm", "image": "nubis-tiny", "flavor": "m1.tiny"}
    )
    assert resp.status_code == 202, resp.text
    inst = resp.json()
    assert server.wait_task(inst["task_id"])["status"] == "succeeded"
    server.wait_console(inst["id"])
    try:
        # VNC listens on loopback only, and never without a password
        xml = subprocess.run(
            ["virsh", "dumpxml", "--security-info", f"nubis-{inst['id']}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "listen='127.0.0.1'" in xml and "passwd=" in xml
        port = re.search(r"<graphics type='vnc' port='(\d+)'", xml).group(1)
        sockets = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True).stdout
        bound = [
            line.split()[3] for line in sockets.splitlines() if line.split()[3].endswith(f":{port}")
        ]
        assert bound == [f"127.0.0.1:{port}"]

        ticket = ticket_for(server, inst["id"])
        assert set(ticket) == {"ticket", "password", "expires_at", "websocket"}
        # for another instance: refused (and the ticket is not spent by trying)
        assert refused(
            server, ws_url(server, f"/api/v1/console/{uuid.uuid4()}/websocket", ticket["ticket"])
        )
        url = ws_url(server, ticket["websocket"], ticket["ticket"])
        # a page of another site cannot open it (and the ticket is not spent by trying)
        assert refused(server, url, origin="https://evil.example")
        with connect(url, subprotocols=["binary"], open_timeout=10, ssl=tls(server)) as ws:
            rfb = Rfb(ws)
            assert rfb.login(ticket["password"]) == 0
            width, height, name = rfb.server_init()
            assert width >= 640 and height >= 200
            assert inst["id"] in name  # QEMU names the desktop after the domain
            assert rfb.screen_update(width, height) >= 1
        assert refused(server, url)  # used
        assert refused(server, ws_url(server, ticket["websocket"], "made-up-ticket"))

        # a fresh ticket sets a fresh password: the old one no longer opens the screen
        second = ticket_for(server, inst["id"])
        # the ticket as a subprotocol (how the web console sends it: in no URL)
        wss = server.url.replace("https://", "wss://") + second["websocket"]
        origin = server.url  # the console's own page
        protocols = ["binary", f"nubis-ticket.{second['ticket']}"]
        with connect(wss, subprotocols=protocols, origin=origin, ssl=tls(server)) as ws:
            assert Rfb(ws).login(ticket["password"]) != 0
        # no ticket ever shows in the server's log
        log = server.log_path.read_text()
        for spent in (ticket["ticket"], second["ticket"]):
            assert spent not in log
    finally:
        resp = server.client.delete(f"/instances/{inst['id']}")
        assert server.wait_task(resp.json()["task_id"])["status"] == "succeeded"
    stopped = server.client.post(f"/instances/{inst['id']}/console")
    assert stopped.status_code == 404
