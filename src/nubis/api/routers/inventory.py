"""Zones and clusters, and their capacity."""

from __future__ import annotations

from fastapi import APIRouter, Response
from sqlalchemy import select

from nubis.api.deps import PageDep, PlatformDep, PrincipalDep
from nubis.api.schemas import (
    CapacityOut,
    ClusterIn,
    ClusterOut,
    ClusterSettingsIn,
    PageOut,
    ZoneIn,
    ZoneOut,
)
from nubis.db.models import Cluster, Zone
from nubis.services.compute import root_volumes
from nubis.services.core.lookup import get_by_id_or_name, paginate
from nubis.services.inventory import topology

router = APIRouter(tags=["inventory"])


@router.get("/zones")
def list_zones(platform: PlatformDep, _p: PrincipalDep, pages: PageDep) -> PageOut[ZoneOut]:
    with platform.db.read() as s:
        page = paginate(s, select(Zone), Zone, pages)
        return PageOut.of(page, ZoneOut)


@router.post("/zones", status_code=201)
def create_zone(body: ZoneIn, platform: PlatformDep, _p: PrincipalDep) -> ZoneOut:
    with platform.db.begin() as s:
        return ZoneOut.model_validate(topology.create_zone(s, body.name))


@router.get("/zones/{ref}")
def get_zone(ref: str, platform: PlatformDep, _p: PrincipalDep) -> ZoneOut:
    with platform.db.read() as s:
        return ZoneOut.model_validate(get_by_id_or_name(s, Zone, ref, "zone"))


@router.get("/zones/{ref}/capacity")
def zone_capacity(ref: str, platform: PlatformDep, _p: PrincipalDep) -> CapacityOut:
    with platform.db.read() as s:
        return CapacityOut.model_validate(topology.zone_capacity(s, ref))


@router.delete("/zones/{ref}", status_code=204)
def delete_zone(ref: str, platform: PlatformDep, _p: PrincipalDep) -> Response:
    with platform.db.begin() as s:
        topology.delete_zone(s, ref)
    return Response(status_code=204)


@router.get("/clusters")
def list_clusters(platform: PlatformDep, _p: PrincipalDep, pages: PageDep) -> PageOut[ClusterOut]:
    with platform.db.read() as s:
        page = paginate(s, select(Cluster), Cluster, pages)
        return PageOut.of(page, ClusterOut)


def _settings(body: ClusterSettingsIn) -> topology.ClusterSettings:
    fields = set(ClusterSettingsIn.model_fields) - {"root_pool"}  # a storage matter
    return topology.ClusterSettings(**body.model_dump(include=fields))


@router.post("/clusters", status_code=201)
def create_cluster(body: ClusterIn, platform: PlatformDep, _p: PrincipalDep) -> ClusterOut:
    with platform.db.begin() as s:
        cluster = topology.create_cluster(s, body.name, body.zone, _settings(body))
        if body.root_pool:  # a new cluster has no pool yet: refused as another's
            root_volumes.set_cluster_pool(s, cluster, body.root_pool)
        return ClusterOut.model_validate(cluster)


@router.get("/clusters/{ref}")
def get_cluster(ref: str, platform: PlatformDep, _p: PrincipalDep) -> ClusterOut:
    with platform.db.read() as s:
        return ClusterOut.model_validate(get_by_id_or_name(s, Cluster, ref, "cluster"))


@router.patch("/clusters/{ref}")
def update_cluster(
    ref: str, body: ClusterSettingsIn, platform: PlatformDep, _p: PrincipalDep
) -> ClusterOut:
    """Change overcommit ratios, threshold, max instances per host (null: no limit),
    weigher, HA settings, the pool of root disks."""
    unset_max = "max_instances_per_host" in body.model_fields_set and (
        body.max_instances_per_host is None
    )
    with platform.db.begin() as s:
        cluster = topology.update_cluster(s, ref, _settings(body), unset_max)
        if body.root_pool is not None:
            root_volumes.set_cluster_pool(s, cluster, body.root_pool)
        return ClusterOut.model_validate(cluster)


@router.get("/clusters/{ref}/capacity")
def cluster_capacity(ref: str, platform: PlatformDep, _p: PrincipalDep) -> CapacityOut:
    with platform.db.read() as s:
        return CapacityOut.model_validate(topology.cluster_capacity(s, ref))


@router.delete("/clusters/{ref}", status_code=204)
def delete_cluster(ref: str, platform: PlatformDep, _p: PrincipalDep) -> Response:
    with platform.db.begin() as s:
        topology.delete_cluster(s, ref)
    return Response(status_code=204)
