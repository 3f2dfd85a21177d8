"""Neutron v2.0 routers, floating IPs and port forwardings, on the router and floating
IP services.

A router's interfaces are added by subnet (``add_router_interface {"subnet_id"}``:
the router takes the next free address of the subnet, as the subnet's gateway
address is the hosts' DHCP server) or by network; its external gateway is
``external_gateway_info`` (``network_id``, ``enable_snat``). A floating IP is
associated with a port (``port_id``), or carries port forwardings, not both.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from nubis.api.deps import PlatformDep
from nubis.api.openstack import links
from nubis.api.openstack.caller import As, owned
from nubis.api.openstack.errors import NotSupported
from nubis.db.models import FloatingIP, Network, Port, PortForwarding, Router, Subnet
from nubis.services.core.errors import BadRequest, NotFoundError
from nubis.services.core.lookup import paginate
from nubis.services.core.principal import Principal
from nubis.services.network.floating_ips import FloatingIPService, ForwardingRequest
from nubis.services.network.routers import (
    RouterRequest,
    gateway_port,
    interfaces,
    router_of_network,
)

router = APIRouter(prefix="/network/v2.0", tags=["openstack network"])

RouterReader = Annotated[Principal, As("GET /routers")]
RouterWriter = Annotated[Principal, As("POST /routers")]
FloatingReader = Annotated[Principal, As("GET /floating-ips")]
FloatingWriter = Annotated[Principal, As("POST /floating-ips")]


def _stamps(row: Any) -> dict[str, Any]:
    stamp = links.timestamp(row.created_at)
    return {"created_at": stamp, "updated_at": stamp, "revision_number": 0, "tags": []}


# -- views ------------------------------------------------------------------------------
def router_view(session: Session, found: Router) -> dict[str, Any]:
    gateway = None
    port = gateway_port(session, found)
    if found.external_network_id is not None:
        gateway = {
            "network_id": found.external_network_id,
            "enable_snat": found.snat,
            "external_fixed_ips": (
                [{"subnet_id": port.subnet_id, "ip_address": port.ip}] if port else []
            ),
        }
    return {
        "id": found.id,
        "name": found.name,
        "status": "ACTIVE" if found.state == "active" else "ERROR",
        "admin_state_up": True,
        "tenant_id": found.project_id,
        "project_id": found.project_id,
        "external_gateway_info": gateway,
        "routes": [],
        "distributed": False,
        "ha": False,
        "availability_zones": [],
        "description": "",
        **_stamps(found),
    }


def floating_view(session: Session, fip: FloatingIP) -> dict[str, Any]:
    port = session.get(Port, fip.fixed_port_id) if fip.fixed_port_id else None
    owner = router_of_network(session, port.network_id) if port else None
    forwards = FloatingIPService.forwardings(session, fip)
    if owner is None and forwards:
        held = session.get(Port, forwards[0].port_id)
        owner = router_of_network(session, held.network_id) if held else None
    return {
        "id": fip.id,
        "floating_ip_address": fip.address,
        "floating_network_id": fip.network_id,
        "router_id": owner.id if owner else None,
        "port_id": fip.fixed_port_id,
        "fixed_ip_address": port.ip if port else None,
        "status": "ACTIVE" if port is not None or forwards else "DOWN",
        "tenant_id": fip.project_id,
        "project_id": fip.project_id,
        "description": fip.description,
        "port_details": None,
        "port_forwardings": [forward_view(f) for f in forwards],
        **_stamps(fip),
    }


def forward_view(forward: PortForwarding) -> dict[str, Any]:
    return {
        "id": forward.id,
        "protocol": forward.protocol,
        "internal_ip_address": forward.internal_ip,
        "internal_port": forward.internal_port,
        "internal_port_id": forward.port_id,
        "external_port": forward.external_port,
        "description": "",
    }


def _own_router(session: Session, principal: Principal, router_id: str) -> Router:
    found = session.scalar(
        select(Router).where(Router.id == router_id, owned(Router.project_id, principal))
    )
    if found is None:
        raise NotFoundError(f"Router {router_id} could not be found.")
    return found


def _own_fip(session: Session, principal: Principal, fip_id: str) -> FloatingIP:
    found = session.scalar(
        select(FloatingIP).where(FloatingIP.id == fip_id, owned(FloatingIP.project_id, principal))
    )
    if found is None:
        raise NotFoundError(f"Floating IP {fip_id} could not be found.")
    return found


# -- routers --------------------------------------------------------------------------
class GatewayInfo(BaseModel):
    model_config = ConfigDict(extra="allow")
    network_id: str | None = None
    enable_snat: bool = True
    external_fixed_ips: list[dict[str, Any]] = Field(default_factory=list)


class RouterBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str | None = None
    admin_state_up: bool = True
    external_gateway_info: GatewayInfo | None = None
    distributed: bool | None = None
    ha: bool | None = None
    routes: list[dict[str, Any]] | None = None


class RouterIn(BaseModel):
    router: RouterBody


def _check_router(body: RouterBody) -> None:
    if not body.admin_state_up:
        raise NotSupported("a router is always up (admin_state_up false is not supported)")
    if body.distributed or body.ha:
        raise NotSupported("distributed and HA routers are not supported")
    if body.routes:
        raise NotSupported("static routes are not supported")
    info = body.external_gateway_info
    if info is not None and info.external_fixed_ips:
        raise NotSupported("Nubis chooses the router's external address itself")


@router.get("/routers")
def list_routers(
    request: Request,
    platform: PlatformDep,
    principal: RouterReader,
    paging: links.PagingDep,
    name: str | None = None,
    id: str | None = None,  # noqa: A002 - Neutron's filter name
) -> dict[str, Any]:
    query = select(Router).where(owned(Router.project_id, principal))
    if name:
        query = query.where(Router.name == name)
    if id:
        query = query.where(Router.id == id)
    with platform.db.read() as s:
        page = paginate(s, query, Router, paging.page())
        views = [router_view(s, r) for r in page.items]
    return {"routers": views, **links.page_links(request, "routers", page.items, paging)}


@router.post("/routers", status_code=201)
def create_router(body: RouterIn, platform: PlatformDep, principal: RouterWriter) -> dict[str, Any]:
    _check_router(body.router)
    if not body.router.name:
        raise BadRequest("a Nubis router needs a name")
    info = body.router.external_gateway_info
    req = RouterRequest(
        name=body.router.name,
        external_network=info.network_id if info else None,
        snat=info.enable_snat if info else True,
    )
    made = platform.routers.create(principal, req)
    with platform.db.read() as s:
        return {"router": router_view(s, s.merge(made))}


@router.get("/routers/{router_id}")
def show_router(router_id: str, platform: PlatformDep, principal: RouterReader) -> dict[str, Any]:
    with platform.db.read() as s:
        return {"router": router_view(s, _own_router(s, principal, router_id))}


@router.put("/routers/{router_id}")
def update_router(
    router_id: str,
    body: RouterIn,
    platform: PlatformDep,
    principal: Annotated[Principal, As("PUT /routers/{ref}/gateway")],
) -> dict[str, Any]:
    """The external gateway is set, changed or (``{}`` or null) removed."""
    _check_router(body.router)
    with platform.db.read() as s:
        found = _own_router(s, principal, router_id)
    if body.router.name is not None and body.router.name != found.name:
        raise NotSupported("a router's name cannot be changed")
    if "external_gateway_info" in body.router.model_fields_set:
        info = body.router.external_gateway_info
        network = info.network_id if info is not None else None
        snat = info.enable_snat if info is not None else True
        platform.routers.set_gateway(principal, found.id, network, snat)
    with platform.db.read() as s:
        return {"router": router_view(s, _own_router(s, principal, router_id))}


@router.delete("/routers/{router_id}", status_code=204)
def delete_router(
    router_id: str,
    platform: PlatformDep,
    principal: Annotated[Principal, As("DELETE /routers/{ref}")],
) -> Response:
    with platform.db.read() as s:
        found = _own_router(s, principal, router_id)
    platform.routers.delete(principal, found.id)
    return Response(status_code=204)


class InterfaceBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    subnet_id: str | None = None
    port_id: str | None = None


def _interface_network(session: Session, principal: Principal, body: InterfaceBody) -> Network:
    if body.port_id is not None:
        raise NotSupported("a router interface is added by subnet_id (Nubis makes its port)")
    if body.subnet_id is None:
        raise BadRequest("give subnet_id")
    network = session.scalar(
        select(Network)
        .join(Subnet, Subnet.network_id == Network.id)
        .where(Subnet.id == body.subnet_id, owned(Network.project_id, principal))
    )
    if network is None:
        raise NotFoundError(f"Subnet {body.subnet_id} could not be found.")
    return network


def _interface_view(found: Router, port: Port) -> dict[str, Any]:
    return {
        "id": found.id,
        "tenant_id": found.project_id,
        "project_id": found.project_id,
        "port_id": port.id,
        "network_id": port.network_id,
        "subnet_id": port.subnet_id,
        "subnet_ids": [port.subnet_id],
    }


@router.put("/routers/{router_id}/add_router_interface")
def add_router_interface(
    router_id: str,
    body: InterfaceBody,
    platform: PlatformDep,
    principal: Annotated[Principal, As("POST /routers/{ref}/interfaces")],
) -> dict[str, Any]:
    with platform.db.read() as s:
        found = _own_router(s, principal, router_id)
        network = _interface_network(s, principal, body)
        s.expunge(found)
    port = platform.routers.add_interface(principal, found.id, network.id)
    return _interface_view(found, port)


@router.put("/routers/{router_id}/remove_router_interface")
def remove_router_interface(
    router_id: str,
    body: InterfaceBody,
    platform: PlatformDep,
    principal: Annotated[Principal, As("DELETE /routers/{ref}/interfaces/{network}")],
) -> dict[str, Any]:
    with platform.db.read() as s:
        found = _own_router(s, principal, router_id)
        network = _interface_network(s, principal, body)
        port = next((p for p in interfaces(s, found.id) if p.network_id == network.id), None)
        if port is None:
            raise NotFoundError(f"Router {router_id} has no interface on subnet {body.subnet_id}.")
        view = _interface_view(found, port)
    platform.routers.remove_interface(principal, found.id, network.id)
    return view


# -- floating IPs ------------------------------------------------------------------------
class FloatingBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    floating_network_id: str | None = None
    port_id: str | None = None
    fixed_ip_address: str | None = None
    floating_ip_address: str | None = None
    description: str = Field(default="", max_length=255)


class FloatingIn(BaseModel):
    floatingip: FloatingBody


def _check_fixed_ip(session: Session, body: FloatingBody) -> None:
    """A port has one address: a fixed_ip_address given must be it."""
    if body.fixed_ip_address is None or body.port_id is None:
        return
    port = session.get(Port, body.port_id)
    if port is not None and port.ip != body.fixed_ip_address:
        raise BadRequest(f"port {body.port_id} has no address {body.fixed_ip_address}")


@router.get("/floatingips")
def list_floating_ips(
    request: Request,
    platform: PlatformDep,
    principal: FloatingReader,
    paging: links.PagingDep,
    floating_ip_address: str | None = None,
    floating_network_id: str | None = None,
    port_id: str | None = None,
    id: str | None = None,  # noqa: A002 - Neutron's filter name
) -> dict[str, Any]:
    query = select(FloatingIP).where(owned(FloatingIP.project_id, principal))
    for column, value in (
        (FloatingIP.address, floating_ip_address),
        (FloatingIP.network_id, floating_network_id),
        (FloatingIP.fixed_port_id, port_id),
        (FloatingIP.id, id),
    ):
        if value:
            query = query.where(column == value)
    with platform.db.read() as s:
        page = paginate(s, query, FloatingIP, paging.page())
        views = [floating_view(s, f) for f in page.items]
    return {"floatingips": views, **links.page_links(request, "floatingips", page.items, paging)}


@router.post("/floatingips", status_code=201)
def create_floating_ip(
    body: FloatingIn, platform: PlatformDep, principal: FloatingWriter
) -> dict[str, Any]:
    fip_body = body.floatingip
    if not fip_body.floating_network_id:
        raise BadRequest("give floating_network_id: an external network")
    with platform.db.read() as s:
        _check_fixed_ip(s, fip_body)
    made = platform.floating_ips.create(
        principal,
        fip_body.floating_network_id,
        fip_body.port_id,
        fip_body.floating_ip_address,
        fip_body.description,
    )
    with platform.db.read() as s:
        return {"floatingip": floating_view(s, s.merge(made))}


@router.get("/floatingips/{fip_id}")
def show_floating_ip(
    fip_id: str, platform: PlatformDep, principal: FloatingReader
) -> dict[str, Any]:
    with platform.db.read() as s:
        return {"floatingip": floating_view(s, _own_fip(s, principal, fip_id))}


@router.put("/floatingips/{fip_id}")
def update_floating_ip(
    fip_id: str,
    body: FloatingIn,
    platform: PlatformDep,
    principal: Annotated[Principal, As("PUT /floating-ips/{ref}/port")],
) -> dict[str, Any]:
    """Associate with ``port_id``, or (null) with nothing."""
    with platform.db.read() as s:
        _own_fip(s, principal, fip_id)
        _check_fixed_ip(s, body.floatingip)
    if "port_id" in body.floatingip.model_fields_set:
        platform.floating_ips.associate(principal, fip_id, body.floatingip.port_id)
    with platform.db.read() as s:
        return {"floatingip": floating_view(s, _own_fip(s, principal, fip_id))}


@router.delete("/floatingips/{fip_id}", status_code=204)
def delete_floating_ip(
    fip_id: str,
    platform: PlatformDep,
    principal: Annotated[Principal, As("DELETE /floating-ips/{ref}")],
) -> Response:
    with platform.db.read() as s:
        _own_fip(s, principal, fip_id)
    platform.floating_ips.delete(principal, fip_id)
    return Response(status_code=204)


# -- port forwardings ------------------------------------------------------------------
class ForwardingBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    protocol: str
    internal_ip_address: str | None = None
    internal_port: int
    internal_port_id: str
    external_port: int
    description: str = ""


class ForwardingIn(BaseModel):
    port_forwarding: ForwardingBody


@router.get("/floatingips/{fip_id}/port_forwardings")
def list_port_forwardings(
    fip_id: str,
    platform: PlatformDep,
    principal: Annotated[Principal, As("GET /floating-ips/{ref}/port-forwardings")],
) -> dict[str, Any]:
    with platform.db.read() as s:
        fip = _own_fip(s, principal, fip_id)
        found = platform.floating_ips.forwardings(s, fip)
        return {"port_forwardings": [forward_view(f) for f in found]}


@router.post("/floatingips/{fip_id}/port_forwardings", status_code=201)
def create_port_forwarding(
    fip_id: str,
    body: ForwardingIn,
    platform: PlatformDep,
    principal: Annotated[Principal, As("POST /floating-ips/{ref}/port-forwardings")],
) -> dict[str, Any]:
    fwd = body.port_forwarding
    with platform.db.read() as s:
        _own_fip(s, principal, fip_id)
        port = s.get(Port, fwd.internal_port_id)
        if port is not None and fwd.internal_ip_address not in (None, port.ip):
            raise BadRequest(
                f"port {fwd.internal_port_id} has no address {fwd.internal_ip_address}"
            )
    made = platform.floating_ips.add_forwarding(
        principal,
        fip_id,
        ForwardingRequest(
            protocol=fwd.protocol,
            external_port=fwd.external_port,
            port=fwd.internal_port_id,
            internal_port=fwd.internal_port,
        ),
    )
    return {"port_forwarding": forward_view(made)}


@router.get("/floatingips/{fip_id}/port_forwardings/{forward_id}")
def show_port_forwarding(
    fip_id: str,
    forward_id: str,
    platform: PlatformDep,
    principal: Annotated[Principal, As("GET /floating-ips/{ref}/port-forwardings")],
) -> dict[str, Any]:
    with platform.db.read() as s:
        fip = _own_fip(s, principal, fip_id)
        found = next(
            (f for f in platform.floating_ips.forwardings(s, fip) if f.id == forward_id), None
        )
        if found is None:
            raise NotFoundError(f"Port forwarding {forward_id} could not be found.")
        return {"port_forwarding": forward_view(found)}


@router.delete("/floatingips/{fip_id}/port_forwardings/{forward_id}", status_code=204)
def delete_port_forwarding(
    fip_id: str,
    forward_id: str,
    platform: PlatformDep,
    principal: Annotated[Principal, As("DELETE /floating-ips/{ref}/port-forwardings/{forward_id}")],
) -> Response:
    with platform.db.read() as s:
        _own_fip(s, principal, fip_id)
    platform.floating_ips.remove_forwarding(principal, fip_id, forward_id)
    return Response(status_code=204)
