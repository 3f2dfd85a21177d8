"""Instances and what belongs to them: flavors, rule groups, snapshots, key pairs,
console tickets."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from nubis.db.models.base import Base, new_id, utcnow


class Flavor(Base):
    __tablename__ = "flavors"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    vcpus: Mapped[int]
    memory_mib: Mapped[int]
    disk_gib: Mapped[int]
    # the traffic limits of its instances' NICs, unless a NIC has its own (see Port)
    bandwidth: Mapped[dict | None] = mapped_column(JSON)
    # the storage pool its instances' root disks are made in (None: the cluster's)
    root_pool_id: Mapped[str | None] = mapped_column(
        ForeignKey("storage_pools.id", name="fk_flavors_root_pool_id")
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class InstanceStatus(StrEnum):
    """An instance's stable state (``Instance.status``; also the power states libvirt
    reports, in the same words)."""

    BUILDING = "building"
    RUNNING = "running"
    STOPPED = "stopped"
    PAUSED = "paused"
    SUSPENDED = "suspended"
    ERROR = "error"
    DELETING = "deleting"


class Instance(Base):
    """A VM. ``status`` is its stable state, ``task_state`` the operation in flight."""

    __tablename__ = "instances"
    __table_args__ = (
        UniqueConstraint("project_id", "name"),
        # a page of the list, in creation order, all or of one state
        Index("ix_instances_created", "created_at", "id"),
        Index("ix_instances_status_created", "status", "created_at", "id"),
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    host_id: Mapped[str | None] = mapped_column(ForeignKey("hosts.id"), index=True)
    image_id: Mapped[str | None] = mapped_column(ForeignKey("images.id"))
    flavor_id: Mapped[str | None] = mapped_column(ForeignKey("flavors.id"))
    # linked: the root disk is a qcow2 overlay of the image (which it then needs);
    # full: an independent copy
    clone_mode: Mapped[str] = mapped_column(String(8), default="linked")
    # the ISO image in the instance's CD-ROM drive (None: the drive is empty)
    cdrom_image_id: Mapped[str | None] = mapped_column(ForeignKey("images.id"), index=True)
    # devices tried at power-on, first to last: "disk,cdrom" or "cdrom,disk"
    boot_order: Mapped[str] = mapped_column(String(32), default="disk,cdrom")
    rule_group_id: Mapped[str | None] = mapped_column(ForeignKey("rule_groups.id"), index=True)
    # what the guest is told at first boot (cloud-init's seed ISO): its host name, the
    # public key of a key pair (a copy: deleting the key pair does not change it) and
    # user-data; seed_format is nocloud | configdrive, None for instances made before
    hostname: Mapped[str | None] = mapped_column(String(63))
    key_name: Mapped[str | None] = mapped_column(String(64))
    public_key: Mapped[str | None] = mapped_column(Text)
    user_data: Mapped[str | None] = mapped_column(Text)
    seed_format: Mapped[str | None] = mapped_column(String(12))
    vcpus: Mapped[int]
    memory_mib: Mapped[int]
    disk_gib: Mapped[int]
    # building | running | stopped | paused | error | deleting
    status: Mapped[str] = mapped_column(String(16), default=InstanceStatus.BUILDING)
    task_state: Mapped[str | None] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    # high availability: restarted elsewhere when its host fails (highest priority
    # first), and in place when its QEMU process dies
    ha_enabled: Mapped[bool] = mapped_column(default=False)
    ha_priority: Mapped[int] = mapped_column(Integer, default=0)
    # the user's own key-value pairs (Nova's server metadata); None: none yet
    properties: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # a resize awaiting confirm or revert: what it had before (flavor_id, vcpus,
    # memory_mib, disk_gib); None when there is none (services/resize.py)
    resize_from: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    @property
    def domain_name(self) -> str:
        return f"nubis-{self.id}"


class RuleGroup(Base):
    """Placement rules: affinity, anti-affinity, or pinning to a set of hosts."""

    __tablename__ = "rule_groups"
    __table_args__ = (UniqueConstraint("project_id", "name"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    policy: Mapped[str] = mapped_column(String(16))  # affinity | anti-affinity | hosts
    strict: Mapped[bool] = mapped_column(default=True)  # refuse (strict) or prefer (soft)
    host_ids: Mapped[list[str]] = mapped_column(JSON, default=list)  # for policy "hosts"
    # bumped by every placement in the group: concurrent placements serialise on it
    version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SnapshotStatus(StrEnum):
    CREATING = "creating"
    AVAILABLE = "available"
    ERROR = "error"


class Snapshot(Base):
    """A point-in-time state of an instance: all its disks (internal qcow2 snapshots),
    and its memory when it was running. ``volume_ids`` are the data volumes it
    covered, so a revert is refused when the instance's disks have changed since."""

    __tablename__ = "snapshots"
    __table_args__ = (UniqueConstraint("instance_id", "name"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    instance_id: Mapped[str] = mapped_column(ForeignKey("instances.id"), index=True)
    memory: Mapped[bool] = mapped_column(default=False)
    volume_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    # creating | available | error (reverting / deleting run as task_state)
    status: Mapped[str] = mapped_column(String(16), default=SnapshotStatus.CREATING)
    task_state: Mapped[str | None] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    @property
    def libvirt_name(self) -> str:
        return f"nubis-snap-{self.id}"


class KeyPair(Base):
    """An SSH public key a project's instances can be given (the private key of a
    generated pair is returned once and never stored)."""

    __tablename__ = "key_pairs"
    __table_args__ = (UniqueConstraint("project_id", "name"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    public_key: Mapped[str] = mapped_column(Text)
    key_type: Mapped[str] = mapped_column(String(32))  # ssh-ed25519, ssh-rsa, ...
    fingerprint: Mapped[str] = mapped_column(String(64))  # SHA256:..., as ssh-keygen -l
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ConsoleTicket(Base):
    """A one-time right to open one instance's console; only its SHA-256 is kept."""

    __tablename__ = "console_tickets"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    ticket_hash: Mapped[str] = mapped_column(String(64), unique=True)
    instance_id: Mapped[str] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)
    used_at: Mapped[datetime | None]


class StaleDomain(Base):
    """A domain left on a host its instance was restarted away from while the host was
    down: removed from that host when it answers again (whatever became of the
    instance meanwhile), so it can never start a second copy of the VM."""

    __tablename__ = "stale_domains"
    host_id: Mapped[str] = mapped_column(
        ForeignKey("hosts.id", ondelete="CASCADE"), primary_key=True
    )
    instance_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
