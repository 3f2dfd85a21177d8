"""Nova's views for operators: hypervisors (hosts) and availability zones (zones)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter
from sqlalchemy import select
from sqlalchemy.orm import Session

from nubis.api.deps import PlatformDep
from nubis.api.openstack.caller import As
from nubis.db.models import Cluster, Host, Zone
from nubis.services.core.errors import NotFoundError
from nubis.services.core.principal import Principal

router = APIRouter(prefix="/compute/v2.1", tags=["openstack compute"])

Operator = Annotated[Principal, As("GET /hosts")]


def hypervisor_view(host: Host, detail: bool) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": host.id,
        "hypervisor_hostname": host.name,
        "state": "up" if host.state == "up" else "down",
        "status": "enabled" if host.enabled and host.maintenance == "none" else "disabled",
    }
    if detail:
        view |= {
            "hypervisor_type": "QEMU",
            "hypervisor_version": 0,
            "host_ip": host.hostname or host.name,
            "vcpus": host.cpus,
            "vcpus_used": host.alloc_vcpus,
            "memory_mb": host.memory_mib,
            "memory_mb_used": host.alloc_memory_mib,
            "free_ram_mb": host.memory_mib - host.alloc_memory_mib,
            "local_gb": host.disk_gib,
            "local_gb_used": host.alloc_disk_gib,
            "free_disk_gb": host.disk_gib - host.alloc_disk_gib,
            "disk_available_least": host.disk_gib - host.alloc_disk_gib,
            "running_vms": host.instance_count,
            "current_workload": 0,
            "cpu_info": {"arch": host.arch, "model": host.cpu_model},
            "service": {"host": host.name, "id": host.id, "disabled_reason": None},
        }
    return view


def _hosts(session: Session) -> list[Host]:
    return list(session.scalars(select(Host).order_by(Host.name)).all())


@router.get("/os-hypervisors")
def list_hypervisors(platform: PlatformDep, _p: Operator) -> dict[str, Any]:
    with platform.db.read() as s:
        return {"hypervisors": [hypervisor_view(h, False) for h in _hosts(s)]}


@router.get("/os-hypervisors/detail")
def list_hypervisors_detail(platform: PlatformDep, _p: Operator) -> dict[str, Any]:
    with platform.db.read() as s:
        return {"hypervisors": [hypervisor_view(h, True) for h in _hosts(s)]}


@router.get("/os-hypervisors/{hypervisor_id}")
def show_hypervisor(
    hypervisor_id: str, platform: PlatformDep, _p: Annotated[Principal, As("GET /hosts/{ref}")]
) -> dict[str, Any]:
    with platform.db.read() as s:
        host = s.get(Host, hypervisor_id)
        if host is None:
            raise NotFoundError(f"Hypervisor {hypervisor_id} could not be found.")
        return {"hypervisor": hypervisor_view(host, True)}


def _zones(session: Session, with_hosts: bool) -> list[dict[str, Any]]:
    zones = []
    for zone in session.scalars(select(Zone).order_by(Zone.name)):
        hosts = session.scalars(
            select(Host)
            .join(Cluster, Cluster.id == Host.cluster_id)
            .where(Cluster.zone_id == zone.id)
            .order_by(Host.name)
        ).all()
        entry: dict[str, Any] = {
            "zoneName": zone.name,
            "zoneState": {"available": any(h.state == "up" for h in hosts)},
            "hosts": None,
        }
        if with_hosts:
            entry["hosts"] = {
                h.name: {
                    "nova-compute": {
                        "available": h.state == "up",
                        "active": h.enabled,
                        "updated_at": None,
                    }
                }
                for h in hosts
            }
        zones.append(entry)
    return zones


@router.get("/os-availability-zone")
def list_zones(platform: PlatformDep, _p: Annotated[Principal, As("GET /zones")]) -> dict[str, Any]:
    with platform.db.read() as s:
        return {"availabilityZoneInfo": _zones(s, with_hosts=False)}


@router.get("/os-availability-zone/detail")
def list_zones_detail(platform: PlatformDep, _p: Operator) -> dict[str, Any]:
    with platform.db.read() as s:
        return {"availabilityZoneInfo": _zones(s, with_hosts=True)}
