"""Floating IPs and port forwardings: addresses of an external network that reach a
port of an overlay network through the router joining the two.

A floating IP holds its address as a port of the external network
(``network:floatingip``), so no router gateway or other floating IP can take it. It
is associated with one port (1:1 NAT), or carries port forwardings (an external
port to a port:port), not both. Every change is put on the router concerned at
once (``RouterService.sync``); a router's host that refuses undoes the change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nubis.db.models import FloatingIP, Network, Port, PortForwarding, Router
from nubis.db.models.routing import FLOATING_IP
from nubis.db.session import Database
from nubis.services.core.errors import BadRequest, Conflict, NotFoundError
from nubis.services.core.lookup import reread
from nubis.services.core.principal import Principal
from nubis.services.identity import quotas
from nubis.services.network import ports as port_alloc
from nubis.services.network.routers import RouterService, external_network, router_of_network

PROTOCOLS = ("tcp", "udp")


@dataclass(frozen=True)
class ForwardingRequest:
    protocol: str
    external_port: int
    port: str  # the port's id
    internal_port: int


def _router_for(session: Session, port: Port, external_id: str) -> Router:
    """The router through which the floating IP's network reaches the port."""
    router = router_of_network(session, port.network_id)
    if router is None or router.external_network_id != external_id:
        network = session.get(Network, port.network_id)
        raise Conflict(
            f"network {network.name if network else port.network_id!r} has no router with "
            "a gateway on the floating IP's external network"
        )
    return router


class FloatingIPService:
    def __init__(self, db: Database, routers: RouterService) -> None:
        self.db = db
        self.routers = routers

    def get(self, session: Session, principal: Principal, ref: str) -> FloatingIP:
        """By id or by address."""
        query = select(FloatingIP).filter_by(**principal.scope())
        found = session.scalar(query.where(FloatingIP.id == ref)) or session.scalar(
            query.where(FloatingIP.address == ref)
        )
        if found is None:
            raise NotFoundError(f"floating IP {ref!r} not found")
        return found

    def _own_port(self, session: Session, principal: Principal, port_id: str) -> Port:
        port = session.get(Port, port_id)
        if port is None or not principal.owns(port.project_id):
            raise NotFoundError(f"port {port_id!r} not found")
        if port.device_owner is not None or port.instance_id is None:
            raise BadRequest(f"port {port_id!r} is not an instance's NIC")
        return port

    def create(
        self,
        principal: Principal,
        network_ref: str,
        port_id: str | None = None,
        address: str | None = None,
        description: str = "",
    ) -> FloatingIP:
        if len(description) > 255:
            raise BadRequest("description: at most 255 characters")
        with self.db.begin() as s:
            network = external_network(s, principal, network_ref)
            quotas.claim(s, principal.project_id, {"floating_ips": 1})
            holder = port_alloc.allocate(s, principal.project_id, network, None, ip=address)
            holder.device_owner, holder.status = FLOATING_IP, "attached"
            fip = FloatingIP(
                project_id=principal.project_id,
                network_id=network.id,
                port_id=holder.id,
                address=holder.ip,
                description=description,
            )
            s.add(fip)
            s.flush()
            fip_id = fip.id
        if port_id is not None:
            try:
                return self.associate(principal, fip_id, port_id)
            except BaseException:
                self._forget(fip_id)
                raise
        return reread(self.db, FloatingIP, fip_id, "floating IP")

    def associate(self, principal: Principal, ref: str, port_id: str | None) -> FloatingIP:
        """Point the floating IP at ``port_id`` (None: at nothing)."""
        with self.db.begin() as s:
            fip = self.get(s, principal, ref)
            routers = set()
            if fip.fixed_port_id is not None:
                old = s.get(Port, fip.fixed_port_id)
                if old is not None and (r := router_of_network(s, old.network_id)) is not None:
                    routers.add(r.id)
            new_router = None
            if port_id is not None:
                if s.scalar(
                    select(PortForwarding.id).where(PortForwarding.floating_ip_id == fip.id)
                ):
                    raise Conflict(
                        f"floating IP {fip.address} carries port forwardings: it cannot also "
                        "be associated with a port"
                    )
                port = self._own_port(s, principal, port_id)
                new_router = _router_for(s, port, fip.network_id).id
                taken = s.scalar(select(FloatingIP).where(FloatingIP.fixed_port_id == port.id))
                if taken is not None and taken.id != fip.id:
                    raise Conflict(f"port {port_id} already has floating IP {taken.address}")
            before, fip.fixed_port_id = fip.fixed_port_id, port_id
            try:
                s.flush()
            except IntegrityError:
                raise Conflict(f"port {port_id} already has a floating IP") from None
            fip_id = fip.id

        def undo(s: Session) -> None:
            found = s.get(FloatingIP, fip_id)
            if found is not None:
                found.fixed_port_id = before

        self._put(new_router, routers, undo)
        return reread(self.db, FloatingIP, fip_id, "floating IP")

    def delete(self, principal: Principal, ref: str) -> None:
        with self.db.read() as s:
            fip_id = self.get(s, principal, ref).id
        self._forget(fip_id)

    def _forget(self, fip_id: str) -> None:
        """The floating IP, its forwardings and its address go; its router follows."""
        with self.db.begin() as s:
            fip = s.get(FloatingIP, fip_id)
            if fip is None:
                return
            routers = set(self._routers_of(s, fip))
            for forward in s.scalars(
                select(PortForwarding).where(PortForwarding.floating_ip_id == fip.id)
            ):
                s.delete(forward)
            holder = s.get(Port, fip.port_id)
            s.delete(fip)
            s.flush()
            if holder is not None:
                s.delete(holder)
        for router_id in sorted(routers):
            self.routers.sync(router_id)

    # -- port forwardings -------------------------------------------------------------
    @staticmethod
    def forwardings(session: Session, fip: FloatingIP) -> list[PortForwarding]:
        return list(
            session.scalars(
                select(PortForwarding)
                .where(PortForwarding.floating_ip_id == fip.id)
                .order_by(PortForwarding.protocol, PortForwarding.external_port)
            )
        )

    def add_forwarding(
        self, principal: Principal, ref: str, req: ForwardingRequest
    ) -> PortForwarding:
        if req.protocol not in PROTOCOLS:
            raise BadRequest(f"protocol must be one of {', '.join(PROTOCOLS)}")
        for what, value in (
            ("external_port", req.external_port),
            ("internal_port", req.internal_port),
        ):
            if not isinstance(value, int) or not 1 <= value <= 65535:
                raise BadRequest(f"{what} must be 1 to 65535")
        with self.db.begin() as s:
            fip = self.get(s, principal, ref)
            if fip.fixed_port_id is not None:
                raise Conflict(
                    f"floating IP {fip.address} is associated with a port: it carries no "
                    "port forwardings"
                )
            port = self._own_port(s, principal, req.port)
            router = _router_for(s, port, fip.network_id)
            others = set(self._routers_of(s, fip)) - {router.id}
            if others:
                raise Conflict(
                    f"the port forwardings of floating IP {fip.address} go through another "
                    "router: a floating IP's forwardings all reach networks of one router"
                )
            forward = PortForwarding(
                floating_ip_id=fip.id,
                protocol=req.protocol,
                external_port=req.external_port,
                port_id=port.id,
                internal_ip=port.ip,
                internal_port=req.internal_port,
            )
            try:
                with s.begin_nested():
                    s.add(forward)
                    s.flush()
            except IntegrityError:
                raise Conflict(
                    f"{req.protocol} port {req.external_port} of {fip.address} is already forwarded"
                ) from None
            forward_id, router_id = forward.id, router.id

        def undo(s: Session) -> None:
            found = s.get(PortForwarding, forward_id)
            if found is not None:
                s.delete(found)

        self._put(router_id, set(), undo)
        return reread(self.db, PortForwarding, forward_id, "port forwarding")

    def remove_forwarding(self, principal: Principal, ref: str, forward_id: str) -> None:
        with self.db.begin() as s:
            fip = self.get(s, principal, ref)
            forward = s.get(PortForwarding, forward_id)
            if forward is None or forward.floating_ip_id != fip.id:
                raise NotFoundError(
                    f"floating IP {fip.address} has no port forwarding {forward_id!r}"
                )
            routers = set(self._routers_of(s, fip))
            s.delete(forward)
        for router_id in sorted(routers):
            self.routers.sync(router_id)

    # -- helpers ------------------------------------------------------------------------
    @staticmethod
    def _routers_of(session: Session, fip: FloatingIP) -> list[str]:
        """The routers that hold the floating IP now."""
        port_ids = [fip.fixed_port_id] if fip.fixed_port_id else []
        port_ids += list(
            session.scalars(
                select(PortForwarding.port_id).where(PortForwarding.floating_ip_id == fip.id)
            )
        )
        found = []
        for port_id in port_ids:
            port = session.get(Port, port_id)
            router = router_of_network(session, port.network_id) if port else None
            if router is not None:
                found.append(router.id)
        return found

    def _put(
        self, router_id: str | None, others: set[str], undo: Callable[[Session], None]
    ) -> None:
        """Put the change on ``router_id`` (undone if its host refuses), then on the
        routers that held the floating IP before."""
        if router_id is not None:
            try:
                self.routers.sync(router_id, strict=True)
            except BadRequest:
                with self.db.begin() as s:
                    undo(s)
                self.routers.sync(router_id)
                raise
        for other in sorted(others - {router_id} if router_id else others):
            self.routers.sync(other)
