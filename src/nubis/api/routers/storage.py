"""Storage pools (primary storage) and disk offerings: administrators manage them,
every user can list them."""

from __future__ import annotations

from fastapi import APIRouter, Response
from sqlalchemy import select

from nubis.api.deps import PageDep, PlatformDep, PrincipalDep
from nubis.api.schemas import PageOut
from nubis.api.storage_schemas import LunOut, OfferingIn, OfferingOut, PoolIn, PoolOut
from nubis.db.models import DiskOffering, StoragePool
from nubis.services.core.lookup import get_by_id_or_name, paginate
from nubis.services.storage import volumes
from nubis.services.storage.pools import PoolRequest

router = APIRouter(tags=["storage"])


@router.get("/storage-pools")
def list_pools(platform: PlatformDep, _p: PrincipalDep, pages: PageDep) -> PageOut[PoolOut]:
    with platform.db.read() as s:
        page = paginate(s, select(StoragePool), StoragePool, pages)
        return PageOut.of(page, PoolOut)


@router.post("/storage-pools", status_code=201)
def create_pool(body: PoolIn, platform: PlatformDep, _p: PrincipalDep) -> PoolOut:
    """Define the pool on every host of its scope (all or none)."""
    pool = platform.pools.create(PoolRequest(**body.model_dump()))
    return PoolOut.model_validate(pool)


@router.get("/storage-pools/{ref}")
def get_pool(ref: str, platform: PlatformDep, _p: PrincipalDep) -> PoolOut:
    with platform.db.read() as s:
        return PoolOut.model_validate(get_by_id_or_name(s, StoragePool, ref, "storage pool"))


@router.get("/storage-pools/{ref}/luns")
def list_luns(ref: str, platform: PlatformDep, _p: PrincipalDep) -> list[LunOut]:
    """An iscsi pool's LUNs as the target has them now, and the volume each is."""
    return [LunOut(lun=n, size_bytes=b, volume_id=v) for n, b, v in platform.pools.luns(ref)]


@router.post("/storage-pools/{ref}/actions/refresh")
def refresh_pool(ref: str, platform: PlatformDep, _p: PrincipalDep) -> PoolOut:
    return PoolOut.model_validate(platform.pools.refresh(ref))


@router.delete("/storage-pools/{ref}", status_code=204)
def delete_pool(ref: str, platform: PlatformDep, _p: PrincipalDep) -> Response:
    platform.pools.delete(ref)
    return Response(status_code=204)


@router.get("/disk-offerings")
def list_offerings(platform: PlatformDep, _p: PrincipalDep, pages: PageDep) -> PageOut[OfferingOut]:
    with platform.db.read() as s:
        page = paginate(s, select(DiskOffering), DiskOffering, pages)
        return PageOut.of(page, OfferingOut)


@router.post("/disk-offerings", status_code=201)
def create_offering(body: OfferingIn, platform: PlatformDep, _p: PrincipalDep) -> OfferingOut:
    with platform.db.begin() as s:
        offering = volumes.create_offering(s, volumes.OfferingRequest(**body.model_dump()))
        return OfferingOut.model_validate(offering)


@router.get("/disk-offerings/{ref}")
def get_offering(ref: str, platform: PlatformDep, _p: PrincipalDep) -> OfferingOut:
    with platform.db.read() as s:
        return OfferingOut.model_validate(get_by_id_or_name(s, DiskOffering, ref, "disk offering"))


@router.delete("/disk-offerings/{ref}", status_code=204)
def delete_offering(ref: str, platform: PlatformDep, _p: PrincipalDep) -> Response:
    with platform.db.begin() as s:
        volumes.delete_offering(s, ref)
    return Response(status_code=204)
