"""Neutron v2.0 writes: networks and subnets made and removed through the network
service. A network is made without subnets (as Neutron makes them); its subnets are
added while it has none, and only its last subnet can be removed, while no port uses
it. Network types: none given or ``nat`` is a Nubis nat network, ``local`` an
isolated one, ``vxlan`` an overlay one (spanning the cluster's hosts; Nubis picks
its VNI), ``flat`` with ``provider:physical_network`` a bridged one (onto that
host bridge), ``vlan`` with ``provider:physical_network`` (the hosts' interface)
and ``provider:segmentation_id`` a VLAN provider network, and ``router:external``
(flat, on ``provider:physical_network``, a host bridge) an external network (all
three system administrators only)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from nubis.api.deps import PlatformDep
from nubis.api.openstack.caller import As, owned
from nubis.api.openstack.errors import NotSupported
from nubis.api.openstack.networks import network_view, subnet_view
from nubis.db.models import Network, Subnet
from nubis.services.core.errors import BadRequest, NotFoundError
from nubis.services.core.principal import Principal
from nubis.services.network.ipam import SubnetRequest
from nubis.services.network.networks import NetworkRequest, subnets_of
from nubis.services.network.specs import EXTERNAL

router = APIRouter(prefix="/network/v2.0", tags=["openstack network"])

# Neutron provider:network_type -> Nubis network mode
NETWORK_TYPES = {
    None: "nat",
    "nat": "nat",
    "local": "isolated",
    "vxlan": "overlay",
    "flat": "bridged",
    "vlan": "vlan",
}


class NetworkBody(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)
    name: str | None = None
    admin_state_up: bool = True
    shared: bool = False
    external: bool = Field(default=False, alias="router:external")
    network_type: str | None = Field(default=None, alias="provider:network_type")
    physical_network: str | None = Field(default=None, alias="provider:physical_network")
    segmentation_id: int | None = Field(default=None, alias="provider:segmentation_id")


class NetworkIn(BaseModel):
    network: NetworkBody


def _request(body: NetworkBody) -> NetworkRequest:
    """The Nubis network asked for; 501 for what Nubis lacks."""
    if body.shared:
        raise NotSupported("shared networks are not supported")
    if body.external:  # a provider network on a host bridge: routers' gateways, floating IPs
        if body.network_type not in (None, "flat") or not body.physical_network:
            raise BadRequest(
                "an external network is flat, on provider:physical_network: the host "
                "bridge of the network nodes"
            )
        return NetworkRequest(
            name=body.name or "", mode=EXTERNAL, host_bridge=body.physical_network
        )
    if not body.admin_state_up:
        raise NotSupported("a network is always up (admin_state_up false is not supported)")
    if body.network_type not in NETWORK_TYPES:
        raise NotSupported(
            f"network type {body.network_type!r} is not supported: Nubis has nat (the "
            "default), local (isolated), vxlan (overlay), flat (bridged onto a host "
            "bridge) and vlan"
        )
    mode = NETWORK_TYPES[body.network_type]
    if body.segmentation_id is not None and mode != "vlan":
        raise NotSupported("Nubis chooses the segmentation id of a vxlan network itself")
    if mode in ("bridged", "vlan") and not body.physical_network:
        raise BadRequest(
            f"a {body.network_type} network needs provider:physical_network: "
            + ("a host bridge" if mode == "bridged" else "the hosts' interface carrying VLANs")
        )
    if mode not in ("bridged", "vlan") and body.physical_network:
        raise BadRequest(f"a {body.network_type or 'nat'} network has no physical network")
    return NetworkRequest(
        name=body.name or "",
        mode=mode,
        host_bridge=body.physical_network if mode == "bridged" else None,
        host_interface=body.physical_network if mode == "vlan" else None,
        segmentation_id=body.segmentation_id if mode == "vlan" else None,
    )


@router.post("/networks", status_code=201)
def create_network(
    body: NetworkIn,
    platform: PlatformDep,
    principal: Annotated[Principal, As("POST /networks")],
) -> dict[str, Any]:
    if not body.network.name:
        raise BadRequest("a Nubis network needs a name")
    network = platform.networks.create(principal, _request(body.network))
    with platform.db.begin() as s:
        return {"network": network_view(s, s.merge(network))}


@router.delete("/networks/{network_id}", status_code=204)
def delete_network(
    network_id: str,
    platform: PlatformDep,
    principal: Annotated[Principal, As("DELETE /networks/{ref}")],
) -> Response:
    platform.networks.delete(principal, _own_network(platform, principal, network_id).id)
    return Response(status_code=204)


class Pool(BaseModel):
    start: str
    end: str


class SubnetBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    network_id: str
    cidr: str | None = None
    name: str | None = Field(default=None, max_length=64)
    ip_version: int = 4
    gateway_ip: str | None = "auto"  # absent: chosen by Nubis; null: no gateway
    enable_dhcp: bool = True
    dns_nameservers: list[str] = Field(default_factory=list)
    allocation_pools: list[Pool] = Field(default_factory=list)
    host_routes: list[dict[str, Any]] = Field(default_factory=list)
    subnetpool_id: str | None = None


class SubnetIn(BaseModel):
    subnet: SubnetBody


def _subnet_request(body: SubnetBody, mode: str) -> SubnetRequest:
    if body.ip_version != 4:
        raise NotSupported("Nubis networks are IPv4 only")
    if body.subnetpool_id or not body.cidr:
        raise BadRequest("a subnet needs a cidr (subnet pools are not supported)")
    if body.host_routes:
        raise NotSupported("host routes are not supported")
    if len(body.allocation_pools) > 1:
        raise NotSupported("a Nubis subnet has one allocation pool")
    if mode not in ("bridged", EXTERNAL):
        if body.gateway_ip is None:
            raise NotSupported(f"a {mode} network's subnet has a gateway (the host)")
        if not body.enable_dhcp:
            raise NotSupported(f"a {mode} network serves DHCP on its subnet")
    pool = body.allocation_pools[0] if body.allocation_pools else None
    return SubnetRequest(
        cidr=body.cidr,
        name=body.name,
        gateway=body.gateway_ip if body.gateway_ip != "auto" else None,
        dns_servers=body.dns_nameservers or None,
        pool_start=pool.start if pool else None,
        pool_end=pool.end if pool else None,
    )


def _own_network(platform: PlatformDep, principal: Principal, network_id: str) -> Network:
    with platform.db.begin() as s:
        network = s.scalar(select(Network).filter_by(id=network_id, **principal.scope()))
        if network is None:
            raise NotFoundError(f"Network {network_id} could not be found.")
        return network


@router.post("/subnets", status_code=201)
def create_subnet(
    body: SubnetIn,
    platform: PlatformDep,
    principal: Annotated[Principal, As("POST /networks/{ref}/subnets")],
) -> dict[str, Any]:
    network = _own_network(platform, principal, body.subnet.network_id)
    request = _subnet_request(body.subnet, network.mode)
    platform.networks.add_subnets(principal, network.id, [request])
    with platform.db.begin() as s:
        (subnet,) = subnets_of(s, network.id)
        return {"subnet": subnet_view(subnet, network.project_id)}


@router.delete("/subnets/{subnet_id}", status_code=204)
def delete_subnet(
    subnet_id: str,
    platform: PlatformDep,
    principal: Annotated[Principal, As("DELETE /networks/{ref}/subnets/{subnet_id}")],
) -> Response:
    with platform.db.begin() as s:
        network_id = s.scalar(
            select(Subnet.network_id)
            .join(Network, Network.id == Subnet.network_id)
            .where(Subnet.id == subnet_id, owned(Network.project_id, principal))
        )
    if network_id is None:
        raise NotFoundError(f"Subnet {subnet_id} could not be found.")
    platform.networks.remove_subnet(principal, network_id, subnet_id)
    return Response(status_code=204)
