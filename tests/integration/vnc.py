"""A guest's VNC console through Nubis's websocket proxy, from a test: the RFB
handshake, and the URL and TLS context of a server's websocket."""

from __future__ import annotations

import ssl
import struct

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from websockets.sync.client import ClientConnection


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
