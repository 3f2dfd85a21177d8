"""Nova flavors and key pairs, mapped onto the flavor and key-pair services."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from nubis.api.deps import PlatformDep
from nubis.api.openstack import links
from nubis.api.openstack.caller import As
from nubis.api.openstack.errors import NotSupported
from nubis.db.models import Flavor, KeyPair
from nubis.services.compute import flavors, keypairs
from nubis.services.core.errors import NotFoundError
from nubis.services.core.lookup import paginate
from nubis.services.core.principal import Principal

router = APIRouter(prefix="/compute/v2.1", tags=["openstack compute"])


def flavor_view(request: Request, flavor: Flavor, detail: bool = True) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": flavor.id,
        "name": flavor.name,
        "links": links.self_links(request, "compute", "flavors", flavor.id),
    }
    if detail:
        view |= {
            "vcpus": flavor.vcpus,
            "ram": flavor.memory_mib,
            "disk": flavor.disk_gib,
            "swap": "",
            "rxtx_factor": 1.0,
            "OS-FLV-EXT-DATA:ephemeral": 0,
            "OS-FLV-DISABLED:disabled": False,
            "os-flavor-access:is_public": True,
        }
    return view


@dataclass
class FlavorFilters:
    minRam: int | None = None  # noqa: N815 - Nova's parameter names
    minDisk: int | None = None  # noqa: N815


def _flavors(
    request: Request,
    platform: PlatformDep,
    detail: bool,
    filters: FlavorFilters,
    paging: links.Paging,
) -> dict[str, Any]:
    query = select(Flavor)
    if filters.minRam:
        query = query.where(Flavor.memory_mib >= filters.minRam)
    if filters.minDisk:
        query = query.where(Flavor.disk_gib >= filters.minDisk)
    with platform.db.begin() as s:
        page = paginate(s, query, Flavor, paging.page())
        views = [flavor_view(request, f, detail) for f in page.items]
    return {"flavors": views, **links.page_links(request, "flavors", page.items, paging)}


Reader = Annotated[Principal, As("GET /flavors")]
Filters = Annotated[FlavorFilters, Depends()]


@router.get("/flavors")
def list_flavors(
    request: Request, platform: PlatformDep, _p: Reader, filters: Filters, paging: links.PagingDep
) -> dict[str, Any]:
    return _flavors(request, platform, False, filters, paging)


@router.get("/flavors/detail")
def list_flavors_detail(
    request: Request, platform: PlatformDep, _p: Reader, filters: Filters, paging: links.PagingDep
) -> dict[str, Any]:
    return _flavors(request, platform, True, filters, paging)


@router.get("/flavors/{flavor_id}")
def show_flavor(
    flavor_id: str,
    request: Request,
    platform: PlatformDep,
    _p: Annotated[Principal, As("GET /flavors/{ref}")],
) -> dict[str, Any]:
    with platform.db.read() as s:
        flavor = s.get(Flavor, flavor_id)
        if flavor is None:
            raise NotFoundError(f"Flavor {flavor_id} could not be found.")
        return {"flavor": flavor_view(request, flavor)}


@router.get("/flavors/{flavor_id}/os-extra_specs")
def flavor_extra_specs(
    flavor_id: str,
    request: Request,
    platform: PlatformDep,
    p: Annotated[Principal, As("GET /flavors/{ref}")],
) -> dict[str, Any]:
    show_flavor(flavor_id, request, platform, p)
    return {"extra_specs": {}}


class FlavorBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    ram: int
    vcpus: int
    disk: int = 0
    id: str | None = None
    swap: int | str = 0
    ephemeral: int = Field(default=0, alias="OS-FLV-EXT-DATA:ephemeral")
    is_public: bool = Field(default=True, alias="os-flavor-access:is_public")


class FlavorCreateIn(BaseModel):
    flavor: FlavorBody


@router.post("/flavors")
def create_flavor(
    body: FlavorCreateIn,
    request: Request,
    platform: PlatformDep,
    _p: Annotated[Principal, As("POST /flavors")],
) -> dict[str, Any]:
    """Admins only. Nubis flavors are public, without swap or ephemeral disks; their ids
    are chosen by Nubis."""
    f = body.flavor
    if f.swap not in (0, "") or f.ephemeral or not f.is_public:
        raise NotSupported("Nubis flavors are public and have no swap or ephemeral disk")
    if f.id not in (None, "auto"):
        raise NotSupported("Nubis chooses flavor ids: leave id out")
    with platform.db.begin() as s:
        flavor = flavors.create(s, f.name, f.vcpus, f.ram, f.disk)
        return {"flavor": flavor_view(request, flavor)}


@router.delete("/flavors/{flavor_id}", status_code=202)
def delete_flavor(
    flavor_id: str,
    platform: PlatformDep,
    _p: Annotated[Principal, As("DELETE /flavors/{ref}")],
) -> Response:
    with platform.db.begin() as s:
        if s.get(Flavor, flavor_id) is None:
            raise NotFoundError(f"Flavor {flavor_id} could not be found.")
        flavors.delete(s, flavor_id)
    return Response(status_code=202)


def keypair_view(pair: KeyPair, private_key: str | None = None) -> dict[str, Any]:
    view = {
        "name": pair.name,
        "public_key": pair.public_key,
        "fingerprint": pair.fingerprint,
        "type": "ssh",
        "created_at": links.timestamp(pair.created_at),
        "id": pair.id,
        "deleted": False,
        "user_id": None,
    }
    if private_key is not None:
        view["private_key"] = private_key
    return view


@router.get("/os-keypairs")
def list_keypairs(
    platform: PlatformDep, principal: Annotated[Principal, As("GET /key-pairs")]
) -> dict[str, Any]:
    with platform.db.read() as s:
        pairs = keypairs.list_pairs(s, principal)
        return {"keypairs": [{"keypair": keypair_view(k)} for k in pairs]}


class KeypairBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    public_key: str | None = Field(default=None, max_length=16384)
    type: str = "ssh"


class KeypairIn(BaseModel):
    keypair: KeypairBody


@router.post("/os-keypairs")
def create_keypair(
    body: KeypairIn, platform: PlatformDep, principal: Annotated[Principal, As("POST /key-pairs")]
) -> dict[str, Any]:
    """Import ``public_key``; without one a pair is generated and the private key is in
    this answer only."""
    if body.keypair.type != "ssh":
        raise NotSupported("Nubis key pairs are SSH keys (type ssh)")
    with platform.db.begin() as s:
        pair, private = keypairs.create(s, principal, body.keypair.name, body.keypair.public_key)
        return {"keypair": keypair_view(pair, private)}


def _keypair(platform: PlatformDep, principal: Principal, name: str) -> KeyPair:
    with platform.db.begin() as s:
        pair = s.scalar(select(KeyPair).filter_by(name=name, project_id=principal.project_id))
        if pair is None:
            raise NotFoundError(f"Keypair {name} not found.")
        s.expunge(pair)
        return pair


@router.get("/os-keypairs/{name}")
def show_keypair(
    name: str, platform: PlatformDep, principal: Annotated[Principal, As("GET /key-pairs/{ref}")]
) -> dict[str, Any]:
    return {"keypair": keypair_view(_keypair(platform, principal, name))}


@router.delete("/os-keypairs/{name}", status_code=202)
def delete_keypair(
    name: str,
    platform: PlatformDep,
    principal: Annotated[Principal, As("DELETE /key-pairs/{ref}")],
) -> Response:
    pair = _keypair(platform, principal, name)
    with platform.db.begin() as s:
        keypairs.delete(s, principal, pair.id)
    return Response(status_code=202)
