"""Connections to libvirtd, one per host URI, with keepalive, reconnect and events.

libvirt's default event loop runs in one daemon thread; it delivers domain
lifecycle events and keepalives for every open connection.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import libvirt

from nubis.drivers.errors import DriverError, HostUnreachable, NotFound, Unsupported
from nubis.keyed_locks import KeyedLocks

log = logging.getLogger(__name__)

_NOT_FOUND_CODES = {
    libvirt.VIR_ERR_NO_DOMAIN,
    libvirt.VIR_ERR_NO_STORAGE_POOL,
    libvirt.VIR_ERR_NO_STORAGE_VOL,
}
_UNREACHABLE_CODES = {
    libvirt.VIR_ERR_SYSTEM_ERROR,
    libvirt.VIR_ERR_RPC,
    libvirt.VIR_ERR_NO_CONNECT,
    libvirt.VIR_ERR_INVALID_CONN,
    libvirt.VIR_ERR_AUTH_FAILED,
}

# virDomainState -> Nubis power state
_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: "stopped",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "running",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "running",
    libvirt.VIR_DOMAIN_SHUTOFF: "stopped",
    libvirt.VIR_DOMAIN_CRASHED: "stopped",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "paused",
}


def power_state(dom: libvirt.virDomain, saved: bool | None = None) -> str:
    """The Nubis power state of a domain: a shut-off domain with a managed save image
    (its memory written to disk by a suspend) is ``suspended``. ``saved``: whether it
    has one, when the caller already knows (else libvirt is asked)."""
    state = _STATES.get(dom.state()[0], "stopped")
    if state == "stopped" and (dom.hasManagedSaveImage(0) if saved is None else saved):
        return "suspended"
    return state


# what libvirt's tc commands print when the host kernel cannot shape traffic
# (no sfq/fq_codel qdisc for inbound limits, no police action for outbound ones)
_NO_TRAFFIC_SHAPING = ("qdisc kind is unknown", "Failed to load TC action module")


def translate(exc: libvirt.libvirtError, what: str = "") -> DriverError:
    code = exc.get_error_code()
    message = exc.get_error_message() or str(exc)
    if any(sign in message for sign in _NO_TRAFFIC_SHAPING):
        return Unsupported(
            "the host cannot enforce bandwidth limits: its kernel lacks the traffic "
            f"control that libvirt uses (sch_sfq, act_police) ({message})"
        )
    if code in _NOT_FOUND_CODES:
        return NotFound(f"{what}: {message}" if what else message)
    if code in _UNREACHABLE_CODES:
        return HostUnreachable(message)
    return DriverError(message)


@dataclass(frozen=True)
class Credentials:
    username: str | None = None
    password: str | None = None

    def __repr__(self) -> str:  # never print a password
        return f"Credentials(username={self.username!r}, password=***)"


@dataclass(frozen=True)
class DomainEvent:
    uri: str
    uuid: str
    name: str
    state: str  # running | paused | stopped
    # the QEMU process ended unexpectedly (killed, crashed): not a shutdown or a stop
    crashed: bool = False


_loop_lock = threading.Lock()
_loop_started = False


def start_event_loop() -> None:
    """Register libvirt's default event loop and run it in a daemon thread (once)."""
    global _loop_started
    with _loop_lock:
        if _loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                try:
                    libvirt.virEventRunDefaultImpl()
                except libvirt.libvirtError:  # pragma: no cover - keep the loop alive
                    log.exception("libvirt event loop iteration failed")

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _loop_started = True


# libvirt's own error handler prints every error to stderr; errors are exceptions here
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


# a dropped connection is closed this long after (keepalive ends any call on a dead
# connection well before)
RETIRE_SECONDS = 120.0


class ConnectionPool:
    """Keeps one open connection per URI and reopens it when it dies."""

    def __init__(
        self,
        keepalive_interval: int = 5,
        keepalive_count: int = 3,
        on_domain_event: Callable[[DomainEvent], None] | None = None,
        on_disconnect: Callable[[str, str], None] | None = None,
    ) -> None:
        start_event_loop()
        self.keepalive = (keepalive_interval, keepalive_count)
        self.on_domain_event = on_domain_event
        self.on_disconnect = on_disconnect
        self._conns: dict[str, libvirt.virConnect] = {}
        # dead connections, closed only once no call can still be running on them
        self._retired: list[tuple[float, libvirt.virConnect]] = []
        self._lock = KeyedLocks()  # one per host URI
        self._guard = threading.Lock()  # of the retired list

    def get(self, uri: str, credentials: Credentials | None = None) -> libvirt.virConnect:
        with self._lock(uri):
            conn = self._conns.get(uri)
            if conn is not None:
                try:
                    if conn.isAlive() == 1:
                        return conn
                except libvirt.libvirtError:
                    pass
                self._drop(uri)
            conn = self._open(uri, credentials)
            self._conns[uri] = conn
            return conn

    def _open(self, uri: str, credentials: Credentials | None) -> libvirt.virConnect:
        try:
            if credentials and (credentials.username or credentials.password):
                conn = libvirt.openAuth(uri, self._auth(credentials), 0)
            else:
                conn = libvirt.open(uri)
        except libvirt.libvirtError as exc:
            raise HostUnreachable(exc.get_error_message() or str(exc)) from exc
        if not uri.startswith("test:"):
            try:
                conn.setKeepAlive(*self.keepalive)
            except libvirt.libvirtError:  # local qemu:/// without a remote driver
                pass
        if self.on_disconnect is not None:
            conn.registerCloseCallback(self._closed, uri)
        if self.on_domain_event is not None:
            conn.domainEventRegisterAny(
                None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._lifecycle, uri
            )
        return conn

    @staticmethod
    def _auth(credentials: Credentials) -> list:
        def callback(creds: list, _data: object) -> int:
            for cred in creds:
                if cred[0] == libvirt.VIR_CRED_AUTHNAME:
                    cred[4] = credentials.username or ""
                elif cred[0] == libvirt.VIR_CRED_PASSPHRASE:
                    cred[4] = credentials.password or ""
            return 0

        return [[libvirt.VIR_CRED_AUTHNAME, libvirt.VIR_CRED_PASSPHRASE], callback, None]

    def _lifecycle(
        self,
        _conn: libvirt.virConnect,
        dom: libvirt.virDomain,
        event: int,
        detail: int,
        uri: str,
    ) -> None:
        if self.on_domain_event is None:
            return
        crashed = event == libvirt.VIR_DOMAIN_EVENT_STOPPED and detail in (
            libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED,
            libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED,
        )
        try:
            state = power_state(dom)
        except libvirt.libvirtError:
            state = "stopped"  # undefined while we looked: it is not running
        try:
            self.on_domain_event(DomainEvent(uri, dom.UUIDString(), dom.name(), state, crashed))
        except Exception:  # never let a listener kill the event loop
            log.exception("domain event listener failed")

    def _closed(self, _conn: libvirt.virConnect, reason: int, uri: str) -> None:
        log.warning("connection to %s closed (reason %s)", uri, reason)
        if self.on_disconnect is not None:
            try:
                self.on_disconnect(uri, f"connection closed (reason {reason})")
            except Exception:
                log.exception("disconnect listener failed")

    def _drop(self, uri: str) -> None:
        """Forget a connection. Another thread may still be inside a call on it (a
        health check given up after its timeout, say) and the event loop may be
        dispatching its callbacks: closing it now frees what they use (libvirt
        crashed the process that way). It is closed after RETIRE_SECONDS, when
        keepalive has long ended any call on it."""
        conn = self._conns.pop(uri, None)
        if conn is not None:
            with self._guard:
                self._retired.append((time.monotonic(), conn))
        self._close_retired()

    def _close_retired(self, everything: bool = False) -> None:
        with self._guard:
            due = [
                c for t, c in self._retired if everything or time.monotonic() - t >= RETIRE_SECONDS
            ]
            self._retired = [(t, c) for t, c in self._retired if c not in due]
        for conn in due:
            try:
                if self.on_disconnect is not None:
                    conn.unregisterCloseCallback()
                conn.close()
            except libvirt.libvirtError:
                pass

    def close(self, uri: str) -> None:
        with self._lock(uri):
            self._drop(uri)

    def discard(self, uri: str, conn: libvirt.virConnect) -> None:
        """Drop ``conn`` (broken under a call) if it is still the pool's connection to
        ``uri``: the next ``get`` opens a new one (another thread may have done so)."""
        with self._lock(uri):
            if self._conns.get(uri) is conn:
                self._drop(uri)

    def close_all(self) -> None:
        for uri in list(self._conns):
            self.close(uri)
        self._close_retired(everything=True)
