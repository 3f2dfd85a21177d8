"""Zones and clusters, and the capacity of hosts, clusters and zones."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nubis.db.models import Cluster, Host, Zone
from nubis.services.core.errors import BadRequest, Conflict
from nubis.services.core.lookup import get_by_id_or_name, validate_name
from nubis.services.scheduler.state import Limits, load_host_states

DEFAULT = "default"
WEIGHERS = ("spread", "pack")


def ensure_default(session: Session) -> Cluster:
    """Zone ``default`` with cluster ``default``: where hosts go unless told otherwise."""
    zone = session.scalar(select(Zone).where(Zone.name == DEFAULT))
    if zone is None:
        zone = Zone(name=DEFAULT)
        session.add(zone)
        session.flush()
    cluster = session.scalar(select(Cluster).where(Cluster.name == DEFAULT))
    if cluster is None:
        cluster = Cluster(name=DEFAULT, zone_id=zone.id)
        session.add(cluster)
        session.flush()
    return cluster


def create_zone(session: Session, name: str) -> Zone:
    validate_name(name, "zone")
    if session.scalar(select(Zone).where(Zone.name == name)) is not None:
        raise Conflict(f"a zone named {name!r} already exists")
    zone = Zone(name=name)
    session.add(zone)
    session.flush()
    return zone


def delete_zone(session: Session, ref: str) -> None:
    zone = get_by_id_or_name(session, Zone, ref, "zone")
    if session.scalar(select(func.count()).where(Cluster.zone_id == zone.id)):
        raise Conflict(f"zone {zone.name!r} still has clusters")
    session.delete(zone)


@dataclass
class ClusterSettings:
    cpu_ratio: float | None = None
    memory_ratio: float | None = None
    disk_ratio: float | None = None
    disable_threshold: float | None = None
    max_instances_per_host: int | None = None
    weigher: str | None = None
    trust_shared_storage: bool | None = None
    ha_reserve: bool | None = None
    ha_lockspace: str | None = None  # "" removes it


def _apply_settings(cluster: Cluster, settings: ClusterSettings, unset_max: bool) -> None:
    for name in ("cpu_ratio", "memory_ratio", "disk_ratio"):
        value = getattr(settings, name)
        if value is not None:
            if not 0 < value <= 64:
                raise BadRequest(f"{name} must be above 0 and at most 64")
            setattr(cluster, name, value)
    if settings.disable_threshold is not None:
        if not 0 < settings.disable_threshold <= 1:
            raise BadRequest("disable_threshold must be above 0 and at most 1")
        cluster.disable_threshold = settings.disable_threshold
    if settings.max_instances_per_host is not None:
        if settings.max_instances_per_host < 1:
            raise BadRequest("max_instances_per_host must be at least 1")
        cluster.max_instances_per_host = settings.max_instances_per_host
    elif unset_max:
        cluster.max_instances_per_host = None
    if settings.trust_shared_storage is not None:
        cluster.trust_shared_storage = settings.trust_shared_storage
    if settings.ha_reserve is not None:
        cluster.ha_reserve = settings.ha_reserve
    if settings.ha_lockspace is not None:
        path = settings.ha_lockspace
        if path and not (path.startswith("/") and Path(path).is_dir()):
            raise BadRequest(
                "ha_lockspace must be the absolute path of a directory this server can "
                "read: the hosts' virtlockd lockspace on the shared storage"
            )
        cluster.ha_lockspace = path or None
    if settings.weigher is not None:
        if settings.weigher not in WEIGHERS:
            raise BadRequest(f"weigher must be one of {', '.join(WEIGHERS)}")
        cluster.weigher = settings.weigher


def create_cluster(
    session: Session, name: str, zone_ref: str, settings: ClusterSettings
) -> Cluster:
    validate_name(name, "cluster")
    zone = get_by_id_or_name(session, Zone, zone_ref, "zone")
    if session.scalar(select(Cluster).where(Cluster.name == name)) is not None:
        raise Conflict(f"a cluster named {name!r} already exists")
    cluster = Cluster(
        name=name,
        zone_id=zone.id,
        cpu_ratio=3.0,
        memory_ratio=1.0,
        disk_ratio=1.0,
        disable_threshold=0.85,
        weigher="spread",
    )
    _apply_settings(cluster, settings, unset_max=False)
    session.add(cluster)
    session.flush()
    return cluster


def update_cluster(
    session: Session, ref: str, settings: ClusterSettings, unset_max: bool = False
) -> Cluster:
    cluster = get_by_id_or_name(session, Cluster, ref, "cluster")
    _apply_settings(cluster, settings, unset_max)
    return cluster


def delete_cluster(session: Session, ref: str) -> None:
    cluster = get_by_id_or_name(session, Cluster, ref, "cluster")
    if session.scalar(select(func.count()).where(Host.cluster_id == cluster.id)):
        raise Conflict(f"cluster {cluster.name!r} still has hosts")
    session.delete(cluster)


# -- capacity ---------------------------------------------------------------------------
@dataclass
class Capacity:
    """One resource: physical, overcommitted (x ratio), limit (x threshold), allocated,
    free (limit - allocated, never below 0)."""

    physical: float = 0
    overcommitted: float = 0
    limit: float = 0
    allocated: float = 0

    @property
    def free(self) -> float:
        return max(0.0, self.limit - self.allocated)

    def add(self, limits: Limits, allocated: int) -> None:
        self.physical += limits.physical
        self.overcommitted += limits.overcommitted
        self.limit += limits.limit
        self.allocated += allocated

    def as_dict(self) -> dict[str, float]:
        return {
            "physical": round(self.physical, 2),
            "overcommitted": round(self.overcommitted, 2),
            "limit": round(self.limit, 2),
            "allocated": self.allocated,
            "free": round(self.free, 2),
        }


def capacity(session: Session, hosts: list[Host]) -> dict[str, object]:
    cpu, mem, disk = Capacity(), Capacity(), Capacity()
    instances = 0
    states = load_host_states(session, host_ids=[h.id for h in hosts]) if hosts else []
    for state in states:
        cpu_limits, mem_limits, disk_limits = state.limits()
        cpu.add(cpu_limits, state.alloc_vcpus)
        mem.add(mem_limits, state.alloc_memory_mib)
        disk.add(disk_limits, state.alloc_disk_gib)
        instances += state.instance_count
    return {
        "hosts": len(states),
        "instances": instances,
        "vcpus": cpu.as_dict(),
        "memory_mib": mem.as_dict(),
        "disk_gib": disk.as_dict(),
    }


def host_capacity(session: Session, ref: str) -> dict[str, object]:
    return capacity(session, [get_by_id_or_name(session, Host, ref, "host")])


def cluster_capacity(session: Session, ref: str) -> dict[str, object]:
    cluster = get_by_id_or_name(session, Cluster, ref, "cluster")
    hosts = session.scalars(select(Host).where(Host.cluster_id == cluster.id)).all()
    return capacity(session, list(hosts))


def zone_capacity(session: Session, ref: str) -> dict[str, object]:
    zone = get_by_id_or_name(session, Zone, ref, "zone")
    hosts = session.scalars(
        select(Host).join(Cluster, Host.cluster_id == Cluster.id).where(Cluster.zone_id == zone.id)
    ).all()
    return capacity(session, list(hosts))
