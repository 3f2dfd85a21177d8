"""Hosts: registration by libvirt URI, discovery, connection state, placement check."""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import urlsplit

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nubis.db.models import Cluster, Host, HostStatus, Instance, utcnow
from nubis.db.session import Database
from nubis.drivers.agent import AgentRef
from nubis.drivers.errors import DriverError
from nubis.drivers.fencing import AGENTS
from nubis.drivers.libvirt.compute import HostInfo, HostRef, LibvirtDriver
from nubis.drivers.libvirt.connection import Credentials
from nubis.services.core import events
from nubis.services.core.errors import BadRequest, Conflict
from nubis.services.core.lookup import get_by_id_or_name, validate_name
from nubis.services.identity.secrets import SecretBox
from nubis.services.inventory import topology

URI_RE = re.compile(r"^(qemu|qemu\+tcp|qemu\+ssh|qemu\+tls|qemu\+unix|test)://[^\s]*$")
VIRT_TYPES = ("kvm", "qemu")


class HostService:
    def __init__(self, driver: LibvirtDriver, box: SecretBox) -> None:
        self.driver = driver
        self.box = box

    def ref(self, host: Host) -> HostRef:
        creds = None
        if host.credentials:
            data = self.box.decrypt(host.credentials)
            creds = Credentials(data.get("username"), data.get("password"))
        return HostRef(host.uri, creds)

    def probe(self, uri: str, credentials: Credentials | None) -> HostInfo:
        """Connect, discover and prepare storage; raises BadRequest when it cannot."""
        ref = HostRef(uri, credentials)
        try:
            self.driver.prepare_host(ref)
            info = self.driver.probe_host(ref)
        except DriverError as exc:
            self.driver.forget_host(ref)
            raise BadRequest(f"cannot use libvirt host at {uri}: {exc}") from exc
        return info

    def add(
        self,
        db: Database,
        name: str,
        uri: str,
        username: str | None = None,
        password: str | None = None,
        virt_type: str | None = None,
        cluster: str | None = None,
    ) -> Host:
        """Validate, probe the host (outside any transaction: it may take a network
        timeout), then record it. Nothing is recorded when any of it fails."""
        validate_name(name, "host")
        if not URI_RE.match(uri or ""):
            raise BadRequest(
                "uri must be a libvirt URI such as qemu:///system, qemu+tcp://host/system "
                "or qemu+ssh://user@host/system"
            )
        if virt_type is not None and virt_type not in VIRT_TYPES:
            raise BadRequest(f"virt_type must be one of {', '.join(VIRT_TYPES)}")
        with db.begin() as s:
            self._check_unique(s, name, uri)
            cluster_id = get_by_id_or_name(s, Cluster, cluster or topology.DEFAULT, "cluster").id
        creds = Credentials(username, password) if (username or password) else None
        info = self.probe(uri, creds)
        with db.begin() as s:
            self._check_unique(s, name, uri)
            host = Host(
                name=name,
                uri=uri,
                credentials=self.box.encrypt(
                    {"username": username or "", "password": password or ""}
                )
                if creds
                else None,
                virt_type_override=virt_type,
                cluster_id=cluster_id,
            )
            self._apply(host, info)
            s.add(host)
            s.flush()
            return host

    @staticmethod
    def _check_unique(session: Session, name: str, uri: str) -> None:
        if session.scalar(select(Host).where((Host.name == name) | (Host.uri == uri))):
            raise Conflict(f"a host named {name!r} or with URI {uri!r} is already registered")

    @staticmethod
    def _apply(host: Host, info: HostInfo) -> None:
        host.state = HostStatus.UP
        host.error = None
        host.last_seen_at = utcnow()
        host.hostname = info.hostname
        host.arch = info.arch
        host.cpu_model = info.cpu_model
        host.cpus = info.cpus
        host.sockets = info.sockets
        host.cores = info.cores
        host.threads = info.threads
        host.memory_mib = info.memory_mib
        host.virt_type = info.virt_type
        host.disk_gib = info.disk_gib

    def refresh(self, db: Database, host_id: str) -> Host | None:
        """Probe the host again (no transaction held meanwhile) and record the result:
        up with fresh facts, or unreachable with the reason (only the HA monitor
        declares a host down, after its timeout: see services/ha.py)."""
        with db.begin() as s:
            host = s.get(Host, host_id)
            if host is None:
                return None
            ref = self.ref(host)
        try:
            result: HostInfo | str = self.driver.probe_host(ref)
        except DriverError as exc:
            result = str(exc)
        with db.begin() as s:
            host = s.get(Host, host_id)
            if host is None:
                return None
            if isinstance(result, str):
                mark_unreachable(s, host, result)
            else:
                was = host.state
                self._apply(host, result)
                host.unreachable_since = None
                if was != HostStatus.UP:
                    events.record(
                        s,
                        "host.up",
                        f"host {host.name} is up",
                        "host",
                        host.id,
                        resource_name=host.name,
                    )
            return host

    def set_fencing(self, session: Session, ref: str, method: str, params: dict[str, str]) -> Host:
        """How the host is powered off before its HA instances restart elsewhere."""
        agent = AGENTS.get(method)
        if agent is None:
            raise BadRequest(f"fence method must be one of {', '.join(AGENTS)}")
        try:
            agent.check(params)
        except ValueError as exc:
            raise BadRequest(str(exc)) from exc
        host = get_by_id_or_name(session, Host, ref, "host")
        host.fence_method = method
        host.fence_params = self.box.encrypt(params) if method != "none" else None
        return host

    def set_agent(self, session: Session, ref: str, url: str | None, token: str | None) -> Host:
        """Where the host's network agent listens and its token (kept encrypted); no
        URL: the host has none."""
        host = get_by_id_or_name(session, Host, ref, "host")
        if url is None:
            host.agent_url = host.agent_token = None
            return host
        parts = urlsplit(url)
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.path not in ("", "/")
        ):
            raise BadRequest("agent url must be http(s)://address:port of the host's agent")
        if not token or len(token) < 16:
            raise BadRequest("the agent's token (16 characters or more) is needed with its url")
        host.agent_url = url.rstrip("/")
        host.agent_token = self.box.encrypt({"token": token})
        return host

    def agent(self, host: Host) -> AgentRef | None:
        """The host's network agent; this machine (a local URI) needs none; None: the
        host has no agent."""
        if host.agent_url:
            token = self.box.decrypt(host.agent_token)["token"] if host.agent_token else None
            return AgentRef(host.agent_url, token)
        if urlsplit(host.uri).hostname is None and not host.uri.startswith("test:"):
            return AgentRef(None)
        return None

    def fence_params(self, host: Host) -> dict[str, str]:
        return self.box.decrypt(host.fence_params) if host.fence_params else {}

    def remove(self, session: Session, ref: str) -> Host:
        host = get_by_id_or_name(session, Host, ref, "host")
        count = session.scalar(select(func.count()).where(Instance.host_id == host.id))
        if count:
            raise Conflict(f"host {host.name!r} still has {count} instance(s); delete them first")
        session.delete(host)
        self.driver.forget_host(self.ref(host))
        return host

    @staticmethod
    def set_enabled(session: Session, ref: str, enabled: bool) -> Host:
        """A disabled host keeps its instances but receives no new placement."""
        host = get_by_id_or_name(session, Host, ref, "host")
        host.enabled = enabled
        return host


def call_each(refs: list[HostRef], call: Callable[[HostRef], object]) -> list[str]:
    """``call`` on every host of ``refs`` (outside any transaction), all of them even
    when some fail; what failed, as ``"<uri>: <error>"``."""
    failed = []
    for ref in refs:
        try:
            call(ref)
        except DriverError as exc:
            failed.append(f"{ref.uri}: {exc}")
    return failed


def mark_unreachable(session: Session, host: Host, error: str) -> None:
    """libvirt did not answer: an up host becomes unreachable (an event); the time it
    started is kept, so the HA monitor can tell a blip from a failure."""
    host.error = error
    if host.state != HostStatus.UP:
        return
    host.state = HostStatus.UNREACHABLE
    host.unreachable_since = utcnow()
    events.record(
        session,
        "host.unreachable",
        f"host {host.name} is unreachable: {error}",
        "host",
        host.id,
        severity="warning",
        resource_name=host.name,
    )
