"""Networks and their subnets, and the ports on them."""

from __future__ import annotations

from fastapi import APIRouter, Response
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from nubis.api.deps import PageDep, PlatformDep, PrincipalDep
from nubis.api.network_schemas import NetworkIn, NetworkOut, PortOut, SubnetOut, SubnetsIn
from nubis.api.routers.ports import port_out
from nubis.api.schemas import PageOut
from nubis.db.models import Network, Port
from nubis.services.core.lookup import paginate
from nubis.services.network.ipam import SubnetRequest
from nubis.services.network.networks import NetworkRequest, subnets_of
from nubis.services.network.specs import EXTERNAL

router = APIRouter(tags=["networks"])


def network_out(session: Session, network: Network) -> NetworkOut:
    out = NetworkOut.model_validate(network)
    out.subnets = [SubnetOut.model_validate(sub) for sub in subnets_of(session, network.id)]
    return out


@router.get("/networks")
def list_networks(
    platform: PlatformDep, principal: PrincipalDep, pages: PageDep
) -> PageOut[NetworkOut]:
    with platform.db.read() as s:
        query = select(Network)
        if not principal.all_projects:  # and the external networks, whoever made them
            query = query.where(
                or_(Network.project_id == principal.project_id, Network.mode == EXTERNAL)
            )
        page = paginate(s, query, Network, pages)
        return PageOut.with_items(page, [network_out(s, n) for n in page.items])


@router.post("/networks", status_code=201)
def create_network(body: NetworkIn, platform: PlatformDep, principal: PrincipalDep) -> NetworkOut:
    """Define the network on every host of its cluster (all or none)."""
    req = NetworkRequest(
        name=body.name,
        mode=body.mode,
        subnets=[SubnetRequest(**sub.model_dump()) for sub in body.subnets],
        cluster=body.cluster,
        host_bridge=body.host_bridge,
        host_interface=body.host_interface,
        segmentation_id=body.segmentation_id,
    )
    network = platform.networks.create(principal, req)
    with platform.db.begin() as s:
        return network_out(s, s.merge(network))


@router.get("/networks/{ref}")
def get_network(ref: str, platform: PlatformDep, principal: PrincipalDep) -> NetworkOut:
    with platform.db.read() as s:
        return network_out(s, platform.networks.get(s, principal, ref))


@router.delete("/networks/{ref}", status_code=204)
def delete_network(ref: str, platform: PlatformDep, principal: PrincipalDep) -> Response:
    platform.networks.delete(principal, ref)
    return Response(status_code=204)


@router.post("/networks/{ref}/subnets", status_code=201)
def add_subnets(
    ref: str, body: SubnetsIn, platform: PlatformDep, principal: PrincipalDep
) -> NetworkOut:
    """Give a network made without subnets its subnets, and define it on every host
    of its cluster (all or none)."""
    subnets = [SubnetRequest(**sub.model_dump()) for sub in body.subnets]
    network = platform.networks.add_subnets(principal, ref, subnets)
    with platform.db.begin() as s:
        return network_out(s, s.merge(network))


@router.delete("/networks/{ref}/subnets/{subnet_id}", status_code=204)
def remove_subnet(
    ref: str, subnet_id: str, platform: PlatformDep, principal: PrincipalDep
) -> Response:
    """Remove a network's only subnet while no port uses it: the network is empty
    again, defined on no host."""
    platform.networks.remove_subnet(principal, ref, subnet_id)
    return Response(status_code=204)


@router.get("/networks/{ref}/ports")
def network_ports(
    ref: str, platform: PlatformDep, principal: PrincipalDep, pages: PageDep
) -> PageOut[PortOut]:
    with platform.db.read() as s:
        network = platform.networks.get(s, principal, ref)
        query = select(Port).where(Port.network_id == network.id)
        page = paginate(s, query, Port, pages)
        return PageOut.with_items(page, [port_out(s, p) for p in page.items])
