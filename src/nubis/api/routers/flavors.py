"""Flavors (compute offerings)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from sqlalchemy import select

from nubis.api.deps import PageDep, PlatformDep, PrincipalDep
from nubis.api.schemas import FlavorIn, FlavorOut, PageOut, bandwidth_dict
from nubis.db.models import Flavor
from nubis.services.compute import flavors
from nubis.services.core.lookup import get_by_id_or_name, paginate

router = APIRouter(prefix="/flavors", tags=["flavors"])


@router.get("")
def list_flavors(
    platform: PlatformDep,
    _p: PrincipalDep,
    pages: PageDep,
    name: str | None = None,
) -> PageOut[FlavorOut]:
    query = select(Flavor)
    if name:
        query = query.where(Flavor.name == name)
    with platform.db.read() as s:
        page = paginate(s, query, Flavor, pages)
        return PageOut.of(page, FlavorOut)


@router.post("", status_code=201)
def create_flavor(body: FlavorIn, platform: PlatformDep, _p: PrincipalDep) -> FlavorOut:
    with platform.db.begin() as s:
        flavor = flavors.create(
            s,
            body.name,
            body.vcpus,
            body.memory_mib,
            body.disk_gib,
            bandwidth_dict(body.bandwidth),
            body.root_pool,
        )
        return FlavorOut.model_validate(flavor)


@router.get("/{ref}")
def get_flavor(ref: str, platform: PlatformDep, _p: PrincipalDep) -> FlavorOut:
    with platform.db.read() as s:
        return FlavorOut.model_validate(get_by_id_or_name(s, Flavor, ref, "flavor"))


@router.delete("/{ref}", status_code=204)
def delete_flavor(ref: str, platform: PlatformDep, _p: PrincipalDep) -> Response:
    with platform.db.begin() as s:
        flavors.delete(s, ref)
    return Response(status_code=204)
