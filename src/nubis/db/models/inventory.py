"""Zones, clusters and hosts."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from nubis.db.models.base import Base, new_id, utcnow


class Zone(Base):
    """A data centre: the largest unit of the inventory."""

    __tablename__ = "zones"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Cluster(Base):
    """Hosts with the same hypervisor and shared storage; VMs live-migrate inside it."""

    __tablename__ = "clusters"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    zone_id: Mapped[str] = mapped_column(ForeignKey("zones.id"))
    cpu_ratio: Mapped[float] = mapped_column(Float, default=3.0)  # vCPUs per host thread
    memory_ratio: Mapped[float] = mapped_column(Float, default=1.0)
    disk_ratio: Mapped[float] = mapped_column(Float, default=1.0)
    # share of the overcommitted capacity above which no new VM lands (CloudStack's 0.85)
    disable_threshold: Mapped[float] = mapped_column(Float, default=0.85)
    max_instances_per_host: Mapped[int | None] = mapped_column(Integer)
    weigher: Mapped[str] = mapped_column(String(16), default="spread")  # spread | pack
    # the disk directory is shared although libvirt cannot tell (a bind mount, a test
    # bed): live migration then skips libvirt's shared-filesystem check
    trust_shared_storage: Mapped[bool] = mapped_column(default=False)
    # keep enough free capacity to restart the VMs of the largest host elsewhere
    ha_reserve: Mapped[bool] = mapped_column(default=False)
    # where this control plane sees the hosts' virtlockd lockspace (a directory on the
    # cluster's shared storage): a held lease there means the VM still runs somewhere
    ha_lockspace: Mapped[str | None] = mapped_column(String(255))
    # the storage pool of its instances' root disks when neither the request nor the
    # flavor names one (None: files in each host's disk pool)
    root_pool_id: Mapped[str | None] = mapped_column(
        ForeignKey("storage_pools.id", use_alter=True, name="fk_clusters_root_pool_id")
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class HostStatus(StrEnum):
    """A host's ``state``: how the control plane last found it."""

    UP = "up"
    UNREACHABLE = "unreachable"  # not answering; its VMs may still run
    DOWN = "down"  # fenced, or never reached


class Host(Base):
    __tablename__ = "hosts"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    uri: Mapped[str] = mapped_column(String(255), unique=True)
    cluster_id: Mapped[str | None] = mapped_column(ForeignKey("clusters.id"), index=True)
    maintenance: Mapped[str] = mapped_column(String(16), default="none")  # none|entering|active
    # what the instances placed here claim; changed only together with those instances
    alloc_vcpus: Mapped[int] = mapped_column(Integer, default=0)
    alloc_memory_mib: Mapped[int] = mapped_column(Integer, default=0)
    alloc_disk_gib: Mapped[int] = mapped_column(Integer, default=0)
    instance_count: Mapped[int] = mapped_column(Integer, default=0)
    disk_gib: Mapped[int] = mapped_column(Integer, default=0)  # capacity of its disk pool
    # encrypted JSON {"username","password"} for URIs that authenticate
    credentials: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default=HostStatus.DOWN)
    # since when libvirt has not answered (None while up)
    unreachable_since: Mapped[datetime | None]
    # how the host is powered off before its VMs restart elsewhere: none|ipmi|devcluster
    fence_method: Mapped[str] = mapped_column(String(16), default="none")
    fence_params: Mapped[str | None] = mapped_column(Text)  # encrypted JSON
    fenced_at: Mapped[datetime | None]
    # the host's network agent (overlay networks): its URL, its token (encrypted)
    agent_url: Mapped[str | None] = mapped_column(String(255))
    agent_token: Mapped[str | None] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(default=True)
    virt_type: Mapped[str] = mapped_column(String(8), default="qemu")  # detected kvm | qemu
    virt_type_override: Mapped[str | None] = mapped_column(String(8))
    arch: Mapped[str] = mapped_column(String(16), default="x86_64")
    cpu_model: Mapped[str | None] = mapped_column(String(64))
    cpus: Mapped[int] = mapped_column(Integer, default=0)
    sockets: Mapped[int] = mapped_column(Integer, default=0)
    cores: Mapped[int] = mapped_column(Integer, default=0)
    threads: Mapped[int] = mapped_column(Integer, default=0)
    memory_mib: Mapped[int] = mapped_column(Integer, default=0)
    hostname: Mapped[str | None] = mapped_column(String(255))
    error: Mapped[str | None] = mapped_column(Text)
    last_seen_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    @property
    def effective_virt_type(self) -> str:
        return self.virt_type_override or self.virt_type
