"""The VNC console of a real guest through Nubis's websocket proxy: one-time tickets,
a password per ticket, VNC on loopback only."""

import re
import ssl
import struct
import subprocess
import uuid

import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

pytestmark = pytest.mark.integration


class Rfb:
    """Just enough of the RFB protocol (RFC 6143) over a websocket to log in with VNC
    authentication and read the server's greeting and a screen update."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.buf = b""

    def read(self, n: int) -> bytes:
        while len(self.buf) < n:
            self.buf += self.ws.recv(timeout=30)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def login(self, password: str) -> int:
        """Handshake and VNC authentication; the SecurityResult (0: accepted)."""
        assert self.read(12).startswith(b"RFB 003.")
        self.ws.send(b"RFB 003.008\n")
        (count,) = struct.unpack("B", self.read(1))
        assert 2 in self.read(count)  # VNC authentication is offered (a password is set)
        self.ws.send(bytes([2]))
        challenge = self.read(16)
        # VNC's DES key: the password's bytes, each bit-reversed, padded to 8
        key = bytes(int(f"{b:08b}"[::-1], 2) for b in password.encode()[:8].ljust(8, b"\0"))
        des = Cipher(TripleDES(key * 3), modes.ECB()).encryptor()
        self.ws.send(des.update(challenge) + des.finalize())
        (result,) = struct.unpack(">I", self.read(4))
        return result

    def server_init(self) -> tuple[int, int, str]:
        self.ws.send(bytes([1]))  # ClientInit: shared
        width, height = struct.unpack(">HH", self.read(4))
        self.read(16)  # pixel format
        (length,) = struct.unpack(">I", self.read(4))
        return width, height, self.read(length).decode()

    def screen_update(self, width: int, height: int) -> int:
        """Ask for the whole screen; the number of rectangles in the answer."""
        self.ws.send(struct.pack(">BBHHHH", 3, 0, 0, 0, width, height))
        kind, _pad, rects = struct.unpack(">BBH", self.read(4))
        assert kind == 0  # FramebufferUpdate
        return rects


def ws_url(server, path: str, ticket: str) -> str:
    return server.url.replace("https://", "wss://") + path + f"?ticket={ticket}"


def tls(server) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(server.ca_file))


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
        log = (server.data_dir.parent / f"server-{server.port}.log").read_text()
        for spent in (ticket["ticket"], second["ticket"]):
            assert spent not in log
    finally:
        resp = server.client.delete(f"/instances/{inst['id']}")
        assert server.wait_task(resp.json()["task_id"])["status"] == "succeeded"
    stopped = server.client.post(f"/instances/{inst['id']}/console")
    assert stopped.status_code == 404
