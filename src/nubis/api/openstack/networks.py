"""Neutron v2.0: version discovery, networks, subnets and ports (read), mapped onto
the network service's rows (writes: network_writes.py)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from nubis.api.deps import PlatformDep
from nubis.api.openstack import links
from nubis.api.openstack.caller import As, owned
from nubis.db.models import Network, Port, Subnet
from nubis.services.core.errors import NotFoundError
from nubis.services.core.lookup import paginate
from nubis.services.core.principal import Principal
from nubis.services.network.networks import subnets_of
from nubis.services.network.ports import port_groups
from nubis.services.network.specs import EXTERNAL, MODE, MTU

router = APIRouter(prefix="/network", tags=["openstack network"])

# Nubis network state -> Neutron status
STATUS = {
    "active": "ACTIVE",
    "empty": "ACTIVE",  # no subnet yet: as a new Neutron network
    "creating": "BUILD",
    "adding": "BUILD",
    "error": "ERROR",
}
# Nubis network mode -> Neutron provider:network_type (network_writes.py reads them)
NETWORK_TYPE = {
    "nat": "nat",
    "isolated": "local",
    "overlay": "vxlan",
    "bridged": "flat",
    "vlan": "vlan",
    "external": "flat",
}


@router.get("")
@router.get("/")
def versions(request: Request) -> dict[str, Any]:
    href = links.service_url(request, "network") + "/v2.0/"
    return {
        "versions": [{"id": "v2.0", "status": "CURRENT", "links": [{"rel": "self", "href": href}]}]
    }


# the Neutron API extensions Nubis serves (the clients look some up before a call)
EXTENSIONS = {
    "external-net": ("External-net", "router:external networks: routers' gateways"),
    "provider": ("Provider Network", "provider:network_type, physical network, segment"),
    "router": ("Neutron L3 Router", "routers, interfaces by subnet, floating IPs"),
    "ext-gw-mode": ("Neutron L3 Configurable external gateway mode", "enable_snat"),
    "floating-ip-port-forwarding": ("Floating IP Port Forwarding", "port forwardings"),
    "security-group": ("security-group", "security groups and their rules"),
    "quotas": ("Quota management support", "network quotas"),
}


def extension_view(alias: str) -> dict[str, Any]:
    name, description = EXTENSIONS[alias]
    return {
        "alias": alias,
        "name": name,
        "description": description,
        "updated": "2026-12-06T00:00:00-00:00",
        "links": [],
    }


@router.get("/v2.0/extensions")
def list_extensions(principal: Annotated[Principal, As("GET /networks")]) -> dict[str, Any]:
    return {"extensions": [extension_view(alias) for alias in EXTENSIONS]}


@router.get("/v2.0/extensions/{alias}")
def show_extension(
    alias: str, principal: Annotated[Principal, As("GET /networks")]
) -> dict[str, Any]:
    if alias not in EXTENSIONS:
        raise NotFoundError(f"Extension with alias {alias} does not exist")
    return {"extension": extension_view(alias)}


def network_view(session: Session, network: Network) -> dict[str, Any]:
    return {
        "id": network.id,
        "name": network.name,
        "status": STATUS.get(network.state, "ERROR"),
        "admin_state_up": True,
        "shared": False,
        "router:external": network.mode == EXTERNAL,
        "subnets": [sub.id for sub in subnets_of(session, network.id)],
        "tenant_id": network.project_id,
        "project_id": network.project_id,
        "provider:network_type": NETWORK_TYPE.get(network.mode, network.mode),
        "provider:physical_network": network.host_bridge or network.host_interface,
        "provider:segmentation_id": network.segment_id,
        "mtu": MTU if network.mode == MODE else 1500,
        "port_security_enabled": True,
        "availability_zones": [],
        "description": f"Nubis {network.mode} network",
        "tags": [],
        "created_at": links.timestamp(network.created_at),
        "updated_at": links.timestamp(network.created_at),
        "revision_number": 0,
    }


Reader = Annotated[Principal, As("GET /networks")]


@router.get("/v2.0/networks")
def list_networks(
    request: Request,
    platform: PlatformDep,
    principal: Reader,
    paging: links.PagingDep,
    name: str | None = None,
    id: str | None = None,  # noqa: A002 - Neutron's filter name
) -> dict[str, Any]:
    # the caller's networks and every external one
    query = select(Network).where(
        or_(owned(Network.project_id, principal), Network.mode == EXTERNAL)
    )
    if name:
        query = query.where(Network.name == name)
    if id:
        query = query.where(Network.id == id)
    with platform.db.read() as s:
        page = paginate(s, query, Network, paging.page())
        views = [network_view(s, n) for n in page.items]
    return {"networks": views, **links.page_links(request, "networks", page.items, paging)}


@router.get("/v2.0/networks/{network_id}")
def show_network(
    network_id: str,
    platform: PlatformDep,
    principal: Annotated[Principal, As("GET /networks/{ref}")],
) -> dict[str, Any]:
    with platform.db.read() as s:
        network = s.scalar(
            select(Network).where(
                Network.id == network_id,
                or_(owned(Network.project_id, principal), Network.mode == EXTERNAL),
            )
        )
        if network is None:
            raise NotFoundError(f"Network {network_id} could not be found.")
        return {"network": network_view(s, network)}


def subnet_view(subnet: Subnet, project_id: str) -> dict[str, Any]:
    return {
        "id": subnet.id,
        "name": subnet.name or subnet.cidr,
        "network_id": subnet.network_id,
        "tenant_id": project_id,
        "project_id": project_id,
        "ip_version": 4,
        "cidr": subnet.cidr,
        "gateway_ip": subnet.gateway,
        "dns_nameservers": subnet.dns_servers,
        "allocation_pools": [{"start": subnet.pool_start, "end": subnet.pool_end}],
        "enable_dhcp": subnet.dhcp,
        "host_routes": [],
        "description": "",
        "tags": [],
        "created_at": links.timestamp(subnet.created_at),
        "updated_at": links.timestamp(subnet.created_at),
        "revision_number": 0,
    }


@router.get("/v2.0/subnets")
def list_subnets(
    platform: PlatformDep, principal: Reader, network_id: str | None = None
) -> dict[str, Any]:
    query = (
        select(Subnet, Network.project_id)
        .join(Network, Network.id == Subnet.network_id)
        .where(owned(Network.project_id, principal))
        .order_by(Subnet.created_at)
    )
    if network_id:
        query = query.where(Subnet.network_id == network_id)
    with platform.db.read() as s:
        return {"subnets": [subnet_view(sub, pid) for sub, pid in s.execute(query).all()]}


@router.get("/v2.0/subnets/{subnet_id}")
def show_subnet(subnet_id: str, platform: PlatformDep, principal: Reader) -> dict[str, Any]:
    query = (
        select(Subnet, Network.project_id)
        .join(Network, Network.id == Subnet.network_id)
        .where(owned(Network.project_id, principal))
        .where(Subnet.id == subnet_id)
    )
    with platform.db.read() as s:
        row = s.execute(query).first()
        if row is None:
            raise NotFoundError(f"Subnet {subnet_id} could not be found.")
        return {"subnet": subnet_view(row[0], row[1])}


# Nubis port status -> Neutron status
PORT_STATUS = {"attached": "ACTIVE", "attaching": "BUILD", "detaching": "BUILD"}


def port_view(port: Port, groups: list[str]) -> dict[str, Any]:
    return {
        "id": port.id,
        "name": "",
        "network_id": port.network_id,
        "mac_address": port.mac,
        "fixed_ips": [{"subnet_id": port.subnet_id, "ip_address": port.ip}],
        "device_id": port.instance_id or port.router_id or "",
        "device_owner": port.device_owner or ("compute:nova" if port.instance_id else ""),
        "status": PORT_STATUS.get(port.status, "DOWN"),
        "admin_state_up": True,
        "port_security_enabled": True,
        "security_groups": groups,
        "tenant_id": port.project_id,
        "project_id": port.project_id,
        "binding:vnic_type": "normal",
        "allowed_address_pairs": [],
        "extra_dhcp_opts": [],
        "description": "",
        "tags": [],
        "created_at": links.timestamp(port.created_at),
        "updated_at": links.timestamp(port.created_at),
        "revision_number": 0,
    }


PortReader = Annotated[Principal, As("GET /ports/{port_id}")]


def _ports(session: Session, rows: list[Port]) -> list[dict[str, Any]]:
    return [port_view(p, sorted(port_groups(session, [p.id]))) for p in rows]


@router.get("/v2.0/ports")
def list_ports(
    request: Request,
    platform: PlatformDep,
    principal: PortReader,
    paging: links.PagingDep,
    device_id: str | None = None,
    network_id: str | None = None,
    mac_address: str | None = None,
) -> dict[str, Any]:
    query = select(Port).where(owned(Port.project_id, principal))
    for column, value in (
        (Port.instance_id, device_id),
        (Port.network_id, network_id),
        (Port.mac, mac_address),
    ):
        if value:
            query = query.where(column == value)
    with platform.db.read() as s:
        page = paginate(s, query, Port, paging.page())
        views = _ports(s, page.items)
    return {"ports": views, **links.page_links(request, "ports", page.items, paging)}


@router.get("/v2.0/ports/{port_id}")
def show_port(port_id: str, platform: PlatformDep, principal: PortReader) -> dict[str, Any]:
    query = select(Port).where(owned(Port.project_id, principal), Port.id == port_id)
    with platform.db.read() as s:
        found = _ports(s, list(s.scalars(query).all()))
    if not found:
        raise NotFoundError(f"Port {port_id} could not be found.")
    return {"port": found[0]}
