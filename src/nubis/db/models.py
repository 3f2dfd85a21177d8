"""ORM models (SQLAlchemy 2, typed). Plain data: no model ever calls a hypervisor."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON}


class Project(Base):
    __tablename__ = "projects"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(String(255), default="")
    # bumped by every quota-checked create: the row lock serialises them per project
    quota_serial: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class User(Base):
    __tablename__ = "users"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    # system_admin | security_admin | auditor, or None for project-only users
    system_role: Mapped[str | None] = mapped_column(String(32))
    enabled: Mapped[bool] = mapped_column(default=True)
    failed_logins: Mapped[int] = mapped_column(default=0)
    locked_until: Mapped[datetime | None]
    password_changed_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PasswordPolicy(Base):
    """The one password and lockout policy (row id 1), set by the security administrator."""

    __tablename__ = "password_policy"
    id: Mapped[int] = mapped_column(primary_key=True, default=1)
    min_length: Mapped[int] = mapped_column(default=12)
    history: Mapped[int] = mapped_column(default=5)  # earlier passwords that may not return
    max_failed_logins: Mapped[int] = mapped_column(default=5)
    lockout_seconds: Mapped[int] = mapped_column(default=300)


class PasswordHistory(Base):
    """Hashes of a user's earlier passwords, so the policy can refuse their reuse."""

    __tablename__ = "password_history"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Membership(Base):
    __tablename__ = "memberships"
    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[str] = mapped_column(String(16))  # admin | member | reader


class Token(Base):
    """A bearer token; only its SHA-256 is stored, so a database leak leaks no token."""

    __tablename__ = "tokens"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    project_id: Mapped[str | None] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class ApiKey(Base):
    """A key id and a secret (encrypted at rest) for HMAC-signed requests in one project."""

    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    secret_encrypted: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


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


class UsedSignature(Base):
    """A signature already accepted: the same one again is a replay until it expires."""

    __tablename__ = "used_signatures"
    signature: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class FirstRunStep(Base):
    """A one-time set-up step done (``defaults``: the first pool and network): it is
    not done again, even once what it made was removed."""

    __tablename__ = "first_run"
    step: Mapped[str] = mapped_column(String(32), primary_key=True)
    done_at: Mapped[datetime] = mapped_column(default=utcnow)


class LoginThrottle(Base):
    """Failed logins from one client address within a window; past the limit the
    address is refused (without any password checked) until ``blocked_until``."""

    __tablename__ = "login_throttle"
    key: Mapped[str] = mapped_column(String(80), primary_key=True)  # "addr:<ip>"
    failures: Mapped[int] = mapped_column(default=0)
    window_start: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    blocked_until: Mapped[datetime | None]


class Approval(Base):
    """A change a security administrator asked for that gives or takes over a system
    role's powers (a system role granted, the password of a holder of one reset): it
    waits for a second security administrator (or the server's own ``nubis server
    approve``) and is applied only then."""

    __tablename__ = "approvals"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(32))  # system-role | password-reset
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    system_role: Mapped[str | None] = mapped_column(String(32))  # system-role: the role
    password_hash: Mapped[str | None] = mapped_column(String(255))  # password-reset
    replaces_hash: Mapped[str | None] = mapped_column(String(255))
    requested_by: Mapped[str | None] = mapped_column(String(36))  # a user id
    requested_by_name: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    decided_by_name: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    decided_at: Mapped[datetime | None]


class Quota(Base):
    """A project's limit for one resource (no row: the default limit)."""

    __tablename__ = "quotas"
    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    resource: Mapped[str] = mapped_column(String(32), primary_key=True)
    limit: Mapped[int] = mapped_column(BigInteger)


class AuditRecord(Base):
    """Who did what, when, from where, with which result. Never changed, never deleted
    through the API; only the retention policy removes old records."""

    __tablename__ = "audit_records"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    user_id: Mapped[str | None] = mapped_column(String(36))
    username: Mapped[str | None] = mapped_column(String(64), index=True)
    project_id: Mapped[str | None] = mapped_column(String(36))
    roles: Mapped[str] = mapped_column(String(128), default="")
    api_key_id: Mapped[str | None] = mapped_column(String(36))
    action: Mapped[str] = mapped_column(String(128), index=True)
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(512))
    resource_type: Mapped[str | None] = mapped_column(String(32))
    resource_id: Mapped[str | None] = mapped_column(String(255))
    params: Mapped[dict[str, Any] | None]
    source_ip: Mapped[str | None] = mapped_column(String(64))
    success: Mapped[bool]
    status_code: Mapped[int]


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
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


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
    state: Mapped[str] = mapped_column(String(16), default="down")  # up|unreachable|down
    # since when libvirt has not answered (None while up)
    unreachable_since: Mapped[datetime | None]
    # how the host is powered off before its VMs restart elsewhere: none|ipmi|devcluster
    fence_method: Mapped[str] = mapped_column(String(16), default="none")
    fence_params: Mapped[str | None] = mapped_column(Text)  # encrypted JSON
    fenced_at: Mapped[datetime | None]
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


class Image(Base):
    """An image of a project (``project_id``) or a public one (none). Names are unique
    within a project and among public images."""

    __tablename__ = "images"
    __table_args__ = (
        Index("ix_images_project_name", "project_id", "name", unique=True),
        Index(
            "ix_images_public_name",
            "name",
            unique=True,
            sqlite_where=text("project_id IS NULL"),
            postgresql_where=text("project_id IS NULL"),
        ),
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(128))
    project_id: Mapped[str | None] = mapped_column(ForeignKey("projects.id", ondelete="SET NULL"))
    status: Mapped[str] = mapped_column(String(16), default="queued")  # queued|active|error
    disk_format: Mapped[str | None] = mapped_column(String(8))  # qcow2 | raw | iso
    virtual_size: Mapped[int | None] = mapped_column(BigInteger)
    size: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Flavor(Base):
    __tablename__ = "flavors"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    vcpus: Mapped[int]
    memory_mib: Mapped[int]
    disk_gib: Mapped[int]
    # the traffic limits of its instances' NICs, unless a NIC has its own (see Port)
    bandwidth: Mapped[dict | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Instance(Base):
    """A VM. ``status`` is its stable state, ``task_state`` the operation in flight."""

    __tablename__ = "instances"
    __table_args__ = (UniqueConstraint("project_id", "name"),)
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
    status: Mapped[str] = mapped_column(String(16), default="building")
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


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (
        Index("ix_tasks_status_created", "status", "created_at"),
        Index("ix_tasks_resource", "resource_type", "resource_id"),
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(32))  # instance.create, instance.stop, ...
    resource_type: Mapped[str] = mapped_column(String(16))
    resource_id: Mapped[str] = mapped_column(String(36))
    project_id: Mapped[str | None] = mapped_column(String(36))
    user_id: Mapped[str | None] = mapped_column(String(36))
    status: Mapped[str] = mapped_column(String(16), default="queued")  # queued|running|...
    progress: Mapped[int] = mapped_column(Integer, default=0)
    step: Mapped[str | None] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class StoragePool(Base):
    """Primary storage: a libvirt pool Nubis defines on every host that uses it.

    ``kind``: ``dir`` (a directory on one host), ``shared`` (a directory every host
    of a cluster mounts, e.g. NFS mounted by the OS), ``lvm`` (a volume group on one
    host), ``nfs`` (an NFS export libvirt mounts on every host of a cluster).
    """

    __tablename__ = "storage_pools"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(255))  # directory / mount point / VG name
    nfs_server: Mapped[str | None] = mapped_column(String(255))
    nfs_export: Mapped[str | None] = mapped_column(String(255))
    cluster_id: Mapped[str | None] = mapped_column(ForeignKey("clusters.id"), index=True)
    host_id: Mapped[str | None] = mapped_column(ForeignKey("hosts.id"), index=True)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    state: Mapped[str] = mapped_column(String(16), default="active")  # active | error
    error: Mapped[str | None] = mapped_column(Text)
    capacity_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    allocation_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    available_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    refreshed_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    @property
    def libvirt_name(self) -> str:
        return f"nubis-pool-{self.id[:8]}"


class DiskOffering(Base):
    """A named kind of data disk: size (or custom), format, provisioning, wiping."""

    __tablename__ = "disk_offerings"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    size_gib: Mapped[int | None] = mapped_column(Integer)  # None: the user gives a size
    format: Mapped[str] = mapped_column(String(8), default="qcow2")
    provisioning: Mapped[str] = mapped_column(String(20), default="thin")
    secure_delete: Mapped[bool] = mapped_column(default=False)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)  # pools it may use
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Volume(Base):
    """A data disk. ``status`` is its stable state, ``task_state`` the operation in
    flight (as for instances: one mutating operation at a time)."""

    __tablename__ = "volumes"
    __table_args__ = (UniqueConstraint("project_id", "name"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    pool_id: Mapped[str] = mapped_column(ForeignKey("storage_pools.id"), index=True)
    offering_id: Mapped[str | None] = mapped_column(ForeignKey("disk_offerings.id"))
    size_gib: Mapped[int] = mapped_column(Integer)
    format: Mapped[str] = mapped_column(String(8))  # qcow2 | raw
    provisioning: Mapped[str] = mapped_column(String(20))
    secure_delete: Mapped[bool] = mapped_column(default=False)
    shareable: Mapped[bool] = mapped_column(default=False)
    # creating | available | in-use | deleting | error
    status: Mapped[str] = mapped_column(String(16), default="creating")
    task_state: Mapped[str | None] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    # bumped when the volume's data is replaced by a new file (a revert to a snapshot):
    # the new file is made beside the old one, and the switch is one database update
    generation: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    @property
    def libvirt_name(self) -> str:
        return volume_file_name(self.id, self.format, self.generation)


def volume_file_name(volume_id: str, fmt: str, generation: int = 0) -> str:
    """The name of a volume's file (libvirt volume) in its pool, per generation."""
    suffix = f".g{generation}" if generation else ""
    return f"nubis-vol-{volume_id}{suffix}" + (".qcow2" if fmt == "qcow2" else ".img")


class VolumeSnapshot(Base):
    """A point-in-time copy of one volume, kept in the volume's pool: independent of
    the volume and of other snapshots (a flattened qcow2), so any can be reverted to,
    cloned into a new volume, or deleted, in any order."""

    __tablename__ = "volume_snapshots"
    __table_args__ = (UniqueConstraint("volume_id", "name"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    volume_id: Mapped[str] = mapped_column(ForeignKey("volumes.id"), index=True)
    size_gib: Mapped[int] = mapped_column(Integer)  # the volume's size when taken
    # the instance it was attached to and running on, frozen while copied (else None)
    live_instance_id: Mapped[str | None] = mapped_column(String(36))
    # creating | available | error (reverting / cloning / deleting run as task_state)
    status: Mapped[str] = mapped_column(String(16), default="creating")
    task_state: Mapped[str | None] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    @property
    def libvirt_name(self) -> str:
        return f"nubis-vsnap-{self.id}.qcow2"


class VolumeAttachment(Base):
    """A volume attached to an instance as device ``target`` (vdb, vdc, ...)."""

    __tablename__ = "volume_attachments"
    __table_args__ = (
        UniqueConstraint("volume_id", "instance_id"),
        UniqueConstraint("instance_id", "target"),
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    volume_id: Mapped[str] = mapped_column(ForeignKey("volumes.id"), index=True)
    instance_id: Mapped[str] = mapped_column(ForeignKey("instances.id"), index=True)
    target: Mapped[str] = mapped_column(String(8))
    mode: Mapped[str] = mapped_column(String(16), default="persistent")  # | nonpersistent
    # attaching | attached | detaching
    status: Mapped[str] = mapped_column(String(16), default="attaching")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    @property
    def serial(self) -> str:
        """virtio-blk serials hold 20 bytes: the volume id without dashes, cut."""
        return self.volume_id.replace("-", "")[:20]


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
    status: Mapped[str] = mapped_column(String(16), default="creating")
    task_state: Mapped[str | None] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    @property
    def libvirt_name(self) -> str:
        return f"nubis-snap-{self.id}"


class Network(Base):
    """An L2 segment of a cluster: ``nat`` (routed out through the host), ``isolated``
    (guests and the host only) or ``bridged`` (onto a bridge the host already has).
    ``tag`` is unique (random, checked by the database): the names of the libvirt
    network and of its bridge on each host derive from it, so two networks never
    collide on a host."""

    __tablename__ = "networks"
    __table_args__ = (UniqueConstraint("project_id", "name"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    cluster_id: Mapped[str] = mapped_column(ForeignKey("clusters.id"), index=True)
    mode: Mapped[str] = mapped_column(String(16))  # nat | isolated | bridged
    tag: Mapped[str] = mapped_column(String(8), unique=True)
    # bridged: the host's bridge the network joins (the same name on every host)
    host_bridge: Mapped[str | None] = mapped_column(String(15))
    state: Mapped[str] = mapped_column(String(16), default="creating")  # | active | error
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    @property
    def libvirt_name(self) -> str:
        return f"nubis-net-{self.tag}"

    @property
    def scope_filter_name(self) -> str:
        return f"nubis-scope-{self.tag}"

    @property
    def bridge_name(self) -> str:
        """The bridge the host's libvirt makes for a nat or isolated network."""
        return self.host_bridge or f"nbr-{self.tag}"


class Subnet(Base):
    """An IPv4 range of a network: the gateway (the host's address on a nat or
    isolated network) and the pool ports' addresses are allocated from."""

    __tablename__ = "subnets"
    __table_args__ = (UniqueConstraint("network_id", "cidr"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    network_id: Mapped[str] = mapped_column(ForeignKey("networks.id"), index=True)
    name: Mapped[str | None] = mapped_column(String(64))  # optional (Neutron's)
    cidr: Mapped[str] = mapped_column(String(18))
    gateway: Mapped[str | None] = mapped_column(String(15))
    dns_servers: Mapped[list[str]] = mapped_column(JSON, default=list)
    pool_start: Mapped[str] = mapped_column(String(15))
    pool_end: Mapped[str] = mapped_column(String(15))
    # the host's DHCP server hands out the ports' addresses (libvirt serves one
    # subnet per network: the first); other subnets' ports are configured statically
    dhcp: Mapped[bool] = mapped_column(default=True)
    position: Mapped[int] = mapped_column(Integer, default=0)  # order in the network
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Port(Base):
    """One NIC of an instance on a network: a MAC and a fixed IP of a subnet. The
    unique constraints make an address impossible to hand out twice."""

    __tablename__ = "ports"
    __table_args__ = (UniqueConstraint("subnet_id", "ip"), UniqueConstraint("mac"))
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    network_id: Mapped[str] = mapped_column(ForeignKey("networks.id"), index=True)
    subnet_id: Mapped[str] = mapped_column(ForeignKey("subnets.id"), index=True)
    instance_id: Mapped[str | None] = mapped_column(ForeignKey("instances.id"), index=True)
    mac: Mapped[str] = mapped_column(String(17))
    ip: Mapped[str] = mapped_column(String(15))
    # attaching | attached | detaching (on an instance) or available (on none)
    status: Mapped[str] = mapped_column(String(16), default="attaching")
    position: Mapped[int] = mapped_column(Integer, default=0)  # NIC order in the instance
    # traffic limits: {"inbound": {"average": KiB/s, "peak": KiB/s, "burst": KiB},
    # "outbound": {...}} (inbound: to the guest); None: unlimited
    bandwidth: Mapped[dict | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SecurityGroup(Base):
    """A set of inbound rules applied to ports (everything else inbound is dropped;
    outbound is open). Enforced on each host by libvirt nwfilter."""

    __tablename__ = "security_groups"
    __table_args__ = (UniqueConstraint("project_id", "name"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    description: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    @property
    def filter_name(self) -> str:
        return f"nubis-sg-{self.id}"


class SecurityGroupRule(Base):
    """Let in ``protocol`` traffic (to ports port_min-port_max for tcp/udp) from
    ``remote_cidr`` or from the ports of ``remote_group_id``."""

    __tablename__ = "security_group_rules"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    group_id: Mapped[str] = mapped_column(ForeignKey("security_groups.id"), index=True)
    protocol: Mapped[str] = mapped_column(String(8))  # tcp | udp | icmp | any
    port_min: Mapped[int | None] = mapped_column(Integer)
    port_max: Mapped[int | None] = mapped_column(Integer)
    remote_cidr: Mapped[str | None] = mapped_column(String(18))
    remote_group_id: Mapped[str | None] = mapped_column(
        ForeignKey("security_groups.id"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PortSecurityGroup(Base):
    __tablename__ = "port_security_groups"
    port_id: Mapped[str] = mapped_column(ForeignKey("ports.id"), primary_key=True)
    group_id: Mapped[str] = mapped_column(
        ForeignKey("security_groups.id"), primary_key=True, index=True
    )


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


# monitoring's and metering's tables live in their own modules; importing them here
# puts them into Base.metadata for every user of the models (migrations included)
from nubis.db import metering_models, monitoring_models  # noqa: E402, F401, I001
