"""A proxy in front of the local libvirtd's Unix socket (or a TCP service, such as
PostgreSQL) that can cut every connection through it at once: a host connection
lost under load, on demand; and that can turn new connections away for a while: a
service that is down."""

from __future__ import annotations

import os
import socket
import tempfile
import threading

LIBVIRT_SOCKET = "/var/run/libvirt/libvirt-sock"


class CuttableProxy:
    def __init__(
        self, upstream: str = LIBVIRT_SOCKET, tcp_upstream: tuple[str, int] | None = None
    ) -> None:
        self.upstream = upstream
        self.tcp_upstream = tcp_upstream
        self.dir = tempfile.mkdtemp(prefix="nubis-proxy-")
        self.path = os.path.join(self.dir, "libvirt-sock")
        if tcp_upstream is None:
            self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.listener.bind(self.path)
        else:  # on a free port of 127.0.0.1
            self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.accepted = 0
        self.cuts = 0
        self.down = False  # new connections are closed at once
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def uri(self) -> str:
        return f"qemu+unix:///system?socket={self.path}"

    @property
    def port(self) -> int:
        return int(self.listener.getsockname()[1])

    def go_down(self) -> int:
        """Cut every connection and turn new ones away (until ``come_back``)."""
        self.down = True
        return self.cut()

    def come_back(self) -> None:
        self.down = False

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.down:
                client.close()
                continue
            if self.tcp_upstream is None:
                server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                server.connect(self.upstream)
            else:
                server = socket.create_connection(self.tcp_upstream)
            with self._lock:
                self.accepted += 1
                self._pairs.append((client, server))
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> int:
        """Break every connection through the proxy now; how many there were."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
            self.cuts += 1
        for pair in pairs:
            for sock in pair:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
        return len(pairs)

    def close(self) -> None:
        self._closed = True
        self.cut()
        self.listener.close()
        if self.tcp_upstream is None:
            os.unlink(self.path)
        os.rmdir(self.dir)
