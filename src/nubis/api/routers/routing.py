"""Routers, floating IPs and port forwardings."""

from __future__ import annotations

from fastapi import APIRouter, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from nubis.api.deps import PageDep, PlatformDep, PrincipalDep
from nubis.api.network_schemas import PortOut
from nubis.api.routers.ports import port_out
from nubis.api.routing_schemas import (
    AssociateIn,
    FloatingIPIn,
    FloatingIPOut,
    ForwardingIn,
    ForwardingOut,
    GatewayIn,
    InterfaceIn,
    RouterIn,
    RouterOut,
)
from nubis.api.schemas import PageOut
from nubis.db.models import FloatingIP, Host, Port, Router
from nubis.services.core.lookup import paginate
from nubis.services.network.floating_ips import ForwardingRequest
from nubis.services.network.routers import (
    RouterRequest,
    gateway_port,
    interfaces,
    router_of_network,
)

router = APIRouter(tags=["routers"])


def router_out(session: Session, found: Router) -> RouterOut:
    out = RouterOut.model_validate(found)
    host = session.get(Host, found.host_id)
    out.host_name = host.name if host else None
    gateway = gateway_port(session, found)
    out.gateway_ip = gateway.ip if gateway else None
    out.interfaces = [port_out(session, p) for p in interfaces(session, found.id)]
    return out


def floating_out(session: Session, fip: FloatingIP) -> FloatingIPOut:
    out = FloatingIPOut.model_validate(fip)
    port = session.get(Port, fip.fixed_port_id) if fip.fixed_port_id else None
    if port is not None:
        out.fixed_ip = port.ip
        found = router_of_network(session, port.network_id)
        out.router_id = found.id if found else None
    return out


# -- routers ------------------------------------------------------------------------------
@router.get("/routers")
def list_routers(
    platform: PlatformDep, principal: PrincipalDep, pages: PageDep
) -> PageOut[RouterOut]:
    with platform.db.read() as s:
        page = paginate(s, select(Router).filter_by(**principal.scope()), Router, pages)
        return PageOut.with_items(page, [router_out(s, r) for r in page.items])


@router.post("/routers", status_code=201)
def create_router(body: RouterIn, platform: PlatformDep, principal: PrincipalDep) -> RouterOut:
    """Make the router's namespace on its network node (and its external leg)."""
    made = platform.routers.create(principal, RouterRequest(**body.model_dump()))
    with platform.db.read() as s:
        return router_out(s, s.merge(made))


@router.get("/routers/{ref}")
def get_router(ref: str, platform: PlatformDep, principal: PrincipalDep) -> RouterOut:
    with platform.db.read() as s:
        return router_out(s, platform.routers.get(s, principal, ref))


@router.delete("/routers/{ref}", status_code=204)
def delete_router(ref: str, platform: PlatformDep, principal: PrincipalDep) -> Response:
    platform.routers.delete(principal, ref)
    return Response(status_code=204)


@router.put("/routers/{ref}/gateway")
def set_gateway(
    ref: str, body: GatewayIn, platform: PlatformDep, principal: PrincipalDep
) -> RouterOut:
    """Join the router to an external network (source NAT out through it)."""
    changed = platform.routers.set_gateway(principal, ref, body.network, body.snat)
    with platform.db.read() as s:
        return router_out(s, s.merge(changed))


@router.delete("/routers/{ref}/gateway")
def clear_gateway(ref: str, platform: PlatformDep, principal: PrincipalDep) -> RouterOut:
    changed = platform.routers.set_gateway(principal, ref, None)
    with platform.db.read() as s:
        return router_out(s, s.merge(changed))


@router.post("/routers/{ref}/interfaces", status_code=201)
def add_interface(
    ref: str, body: InterfaceIn, platform: PlatformDep, principal: PrincipalDep
) -> PortOut:
    """A leg on an overlay network; its DHCP hands the leg's address out as the
    default gateway (guests take it at their next lease)."""
    port = platform.routers.add_interface(principal, ref, body.network)
    with platform.db.read() as s:
        return port_out(s, s.merge(port))


@router.delete("/routers/{ref}/interfaces/{network}", status_code=204)
def remove_interface(
    ref: str, network: str, platform: PlatformDep, principal: PrincipalDep
) -> Response:
    platform.routers.remove_interface(principal, ref, network)
    return Response(status_code=204)


# -- floating IPs ---------------------------------------------------------------------------
@router.get("/floating-ips")
def list_floating_ips(
    platform: PlatformDep, principal: PrincipalDep, pages: PageDep
) -> PageOut[FloatingIPOut]:
    with platform.db.read() as s:
        query = select(FloatingIP).filter_by(**principal.scope())
        page = paginate(s, query, FloatingIP, pages)
        return PageOut.with_items(page, [floating_out(s, f) for f in page.items])


@router.post("/floating-ips", status_code=201)
def create_floating_ip(
    body: FloatingIPIn, platform: PlatformDep, principal: PrincipalDep
) -> FloatingIPOut:
    fip = platform.floating_ips.create(
        principal, body.network, body.port, body.address, body.description
    )
    with platform.db.read() as s:
        return floating_out(s, s.merge(fip))


@router.get("/floating-ips/{ref}")
def get_floating_ip(ref: str, platform: PlatformDep, principal: PrincipalDep) -> FloatingIPOut:
    """By id or by address."""
    with platform.db.read() as s:
        return floating_out(s, platform.floating_ips.get(s, principal, ref))


@router.delete("/floating-ips/{ref}", status_code=204)
def delete_floating_ip(ref: str, platform: PlatformDep, principal: PrincipalDep) -> Response:
    platform.floating_ips.delete(principal, ref)
    return Response(status_code=204)


@router.put("/floating-ips/{ref}/port")
def associate(
    ref: str, body: AssociateIn, platform: PlatformDep, principal: PrincipalDep
) -> FloatingIPOut:
    """Point the floating IP at a port (1:1 NAT through the port's router), or at none."""
    fip = platform.floating_ips.associate(principal, ref, body.port)
    with platform.db.read() as s:
        return floating_out(s, s.merge(fip))


@router.get("/floating-ips/{ref}/port-forwardings")
def list_forwardings(
    ref: str, platform: PlatformDep, principal: PrincipalDep
) -> list[ForwardingOut]:
    with platform.db.read() as s:
        fip = platform.floating_ips.get(s, principal, ref)
        found = platform.floating_ips.forwardings(s, fip)
        return [ForwardingOut.model_validate(f) for f in found]


@router.post("/floating-ips/{ref}/port-forwardings", status_code=201)
def add_forwarding(
    ref: str, body: ForwardingIn, platform: PlatformDep, principal: PrincipalDep
) -> ForwardingOut:
    """Send the floating IP's external port to a port's internal port."""
    made = platform.floating_ips.add_forwarding(
        principal, ref, ForwardingRequest(**body.model_dump())
    )
    return ForwardingOut.model_validate(made)


@router.delete("/floating-ips/{ref}/port-forwardings/{forward_id}", status_code=204)
def remove_forwarding(
    ref: str, forward_id: str, platform: PlatformDep, principal: PrincipalDep
) -> Response:
    platform.floating_ips.remove_forwarding(principal, ref, forward_id)
    return Response(status_code=204)
