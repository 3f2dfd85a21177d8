"""What every libvirt driver class shares: a host reference and the call wrapper that
turns libvirt's exceptions into the drivers' own errors."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import libvirt

from nubis import blocking
from nubis.drivers.errors import HostUnreachable
from nubis.drivers.libvirt.connection import ConnectionPool, Credentials, translate

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HostRef:
    uri: str
    credentials: Credentials | None = None


# what libvirt's client says when the connection broke under a call (a keepalive
# timeout of a loaded host, a reset): the call is repeated on a new connection
BROKEN = (
    "Cannot recv data",
    "Cannot write data",
    "Connection reset by peer",
    "Broken pipe",
    "client socket is closed",
    "End of file while reading data",
    "connection closed due to keepalive timeout",
)
RECONNECTS = 3


def broken_connection(error: BaseException) -> bool:
    if isinstance(error, libvirt.libvirtError):
        message = error.get_error_message() or str(error)
    elif isinstance(error, HostUnreachable):
        message = str(error)
    else:
        return False
    return any(sign in message for sign in BROKEN)


def unless_done(action: Callable[[], object], done: Callable[[], bool]) -> None:
    """Run a libvirt action that a repeat may find already done: the first try on a
    connection that broke may have reached libvirtd (or still be running there, holding
    the domain's job), so a repeat's refusal is no error when the outcome is there."""
    try:
        action()
    except libvirt.libvirtError:
        if not done():
            raise


class DriverBase:
    """Every call goes through ``_call``: outside any database write transaction, with
    libvirt's errors turned into the drivers' own. A connection that breaks under a
    call is dropped and the call repeated on a new one (up to ``RECONNECTS`` times):
    every driver method is idempotent, so a repeat of one that had done its work
    finds it done. A host that cannot be reached again is an error as before."""

    def __init__(self, conns: ConnectionPool) -> None:
        self.conns = conns

    def _call(
        self,
        host: HostRef,
        fn: Callable[[libvirt.virConnect], T],
        what: str = "",
        retry: bool = True,
    ) -> T:
        blocking.check(f"libvirt call ({what or 'host'})")
        attempt = 0
        while True:
            conn = self.conns.get(host.uri, host.credentials)
            try:
                return fn(conn)
            except (libvirt.libvirtError, HostUnreachable) as exc:
                if not (retry and attempt < RECONNECTS and broken_connection(exc)):
                    if isinstance(exc, libvirt.libvirtError):
                        raise translate(exc, what) from exc
                    raise
                attempt += 1
                log.warning(
                    "connection to %s broke during %s (%s): reconnecting (%d of %d)",
                    host.uri,
                    what or "a call",
                    exc,
                    attempt,
                    RECONNECTS,
                )
                self.conns.discard(host.uri, conn)
                time.sleep(0.2 * attempt)

    def _poll(
        self,
        host: HostRef,
        done: Callable[[libvirt.virConnect], bool],
        timeout: float,
        what: str = "",
    ) -> bool:
        """Whether ``done`` came true within ``timeout`` seconds, looked at every 0.2 s.
        Each look is a call of its own: a connection that breaks while the guest takes
        its time costs that look's repeat, not the whole wait's."""
        deadline = time.monotonic() + timeout
        while True:
            if self._call(host, done, what):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)

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
