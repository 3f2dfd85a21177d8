"""Is a host's libvirt endpoint reachable at all? A TCP connect with a short timeout,
so a host whose network is cut is noticed in seconds, not after the minutes a
blocked TCP connect takes to give up."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

from nubis import blocking

DEFAULT_PORTS = {"tcp": 16509, "tls": 16514, "ssh": 22}


def endpoint(uri: str) -> tuple[str, int] | None:
    """(address, port) of a remote libvirt URI; None for a local one."""
    parts = urlsplit(uri)
    transport = parts.scheme.partition("+")[2]
    if not parts.hostname or transport not in DEFAULT_PORTS:
        return None
    return parts.hostname, parts.port or DEFAULT_PORTS[transport]


def port_open(uri: str, timeout: float) -> str | None:
    """None when the endpoint accepts a TCP connection (or the URI is local), else why."""
    where = endpoint(uri)
    if where is None:
        return None
    blocking.check("host reachability probe")
    try:
        with socket.create_connection(where, timeout=timeout):
            return None
    except OSError as exc:
        return f"{where[0]}:{where[1]} does not answer: {exc.strerror or exc}"
