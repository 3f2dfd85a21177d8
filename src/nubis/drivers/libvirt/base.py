"""What every libvirt driver class shares: a host reference and the call wrapper that
turns libvirt's exceptions into the drivers' own errors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import libvirt

from nubis.drivers.libvirt.connection import ConnectionPool, Credentials, translate

T = TypeVar("T")


@dataclass(frozen=True)
class HostRef:
    uri: str
    credentials: Credentials | None = None


class DriverBase:
    def __init__(self, conns: ConnectionPool) -> None:
        self.conns = conns

    def _call(self, host: HostRef, fn: Callable[[libvirt.virConnect], T], what: str = "") -> T:
        conn = self.conns.get(host.uri, host.credentials)
        try:
            return fn(conn)
        except libvirt.libvirtError as exc:
            raise translate(exc, what) from exc

    @staticmethod
    def _domain(conn: libvirt.virConnect, uuid: str) -> libvirt.virDomain:
        return conn.lookupByUUIDString(uuid)

    def _find_domain(self, conn: libvirt.virConnect, uuid: str) -> libvirt.virDomain | None:
        try:
            return self._domain(conn, uuid)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise
