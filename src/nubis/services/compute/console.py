"""Console tickets (as oVirt's): a one-time, short-lived right to one instance's VNC.

Asking for a ticket gives the instance's VNC server a fresh password valid until
the ticket expires, and returns both. Opening the console websocket spends the
ticket: the same ticket again, an expired one, or one for another instance is
refused before anything is connected.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session

from nubis.db.models import ConsoleTicket, Host, Instance, InstanceStatus, utcnow
from nubis.db.session import Database
from nubis.drivers.errors import DriverError
from nubis.drivers.libvirt.base import HostRef
from nubis.drivers.libvirt.console import VNC_PASSWORD_LENGTH, ConsoleDriver
from nubis.services.compute.instances import InstanceService
from nubis.services.core.errors import Conflict, Unauthorized, Unavailable
from nubis.services.core.principal import Principal
from nubis.services.inventory.hosts import HostService


@dataclass(frozen=True)
class Ticket:
    ticket: str
    password: str
    instance_id: str
    expires_at: datetime


@dataclass(frozen=True)
class Endpoint:
    """Where an instance's VNC server listens."""

    address: str
    port: int


def _hash(ticket: str) -> str:
    return hashlib.sha256(ticket.encode()).hexdigest()


class ConsoleService:
    def __init__(
        self,
        db: Database,
        instances: InstanceService,
        hosts: HostService,
        driver: ConsoleDriver,
        ticket_seconds: int = 60,
    ) -> None:
        self.db = db
        self.ticket_seconds = ticket_seconds
        self.instances = instances
        self.hosts = hosts
        self.driver = driver

    def _running_on(self, session: Session, instance: Instance) -> HostRef:
        if (
            instance.status not in (InstanceStatus.RUNNING, InstanceStatus.PAUSED)
            or instance.host_id is None
        ):
            raise Conflict(f"instance {instance.name!r} is {instance.status}: no console")
        host = session.get(Host, instance.host_id)
        assert host is not None
        return self.hosts.ref(host)

    def issue(self, principal: Principal, ref: str) -> Ticket:
        """A ticket and the VNC password that goes with it (both valid for
        ``ticket_seconds``, a minute by default)."""
        with self.db.begin() as s:
            instance = self.instances.get(s, principal, ref)
            host = self._running_on(s, instance)
            instance_id = instance.id
        ticket = secrets.token_urlsafe(32)
        password = secrets.token_urlsafe(8)[:VNC_PASSWORD_LENGTH]
        expires_at = utcnow() + timedelta(seconds=self.ticket_seconds)
        try:
            self.driver.set_vnc_password(host, instance_id, password, expires_at)
        except DriverError as exc:
            raise Unavailable(f"the console of the instance cannot be opened: {exc}") from exc
        with self.db.begin() as s:
            s.add(
                ConsoleTicket(
                    ticket_hash=_hash(ticket),
                    instance_id=instance_id,
                    user_id=principal.user_id,
                    expires_at=expires_at,
                )
            )
        return Ticket(ticket, password, instance_id, expires_at)

    def spend(self, instance_id: str, ticket: str) -> Endpoint:
        """Spend a ticket for ``instance_id`` (once); where its VNC server is."""
        with self.db.begin() as s:
            spent = s.execute(
                update(ConsoleTicket)
                .where(
                    ConsoleTicket.ticket_hash == _hash(ticket),
                    ConsoleTicket.instance_id == instance_id,
                    ConsoleTicket.used_at.is_(None),
                    ConsoleTicket.expires_at > utcnow(),
                )
                .values(used_at=utcnow())
            )
            if spent.rowcount != 1:  # type: ignore[attr-defined]
                raise Unauthorized("console ticket unknown, used, expired or for another instance")
            instance = s.get(Instance, instance_id)
            assert instance is not None
            host = self._running_on(s, instance)
        try:
            address, port = self.driver.vnc_endpoint(host, instance_id)
        except DriverError as exc:
            raise Unavailable(f"the console is not reachable: {exc}") from exc
        return Endpoint(address, port)
