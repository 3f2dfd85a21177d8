"""Images, storage pools, disk offerings, volumes, their snapshots and attachments."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    JSON,
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from nubis.db.models.base import Base, new_id, utcnow


class ImageStatus(StrEnum):
    QUEUED = "queued"  # waiting for its data (an upload)
    SAVING = "saving"  # an upload is writing it
    CREATING = "creating"  # a task (a template) is making it
    ACTIVE = "active"
    ERROR = "error"
    DELETING = "deleting"


class PoolState(StrEnum):
    CREATING = "creating"
    ACTIVE = "active"
    ERROR = "error"
    DELETING = "deleting"


class VolumeStatus(StrEnum):
    CREATING = "creating"
    AVAILABLE = "available"
    IN_USE = "in-use"
    ERROR = "error"
    DELETING = "deleting"


class VolumeSnapshotStatus(StrEnum):
    CREATING = "creating"
    AVAILABLE = "available"
    ERROR = "error"


class AttachmentStatus(StrEnum):
    """A volume attachment's status, and a port's (plugged into its instance)."""

    ATTACHING = "attaching"
    ATTACHED = "attached"
    DETACHING = "detaching"


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
    status: Mapped[str] = mapped_column(String(16), default=ImageStatus.QUEUED)
    disk_format: Mapped[str | None] = mapped_column(String(8))  # qcow2 | raw | iso
    virtual_size: Mapped[int | None] = mapped_column(BigInteger)
    size: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class StoragePool(Base):
    """Primary storage: a libvirt pool Nubis defines on every host that uses it.

    ``kind``: ``dir`` (a directory on one host), ``shared`` (a directory every host
    of a cluster mounts, e.g. NFS mounted by the OS), ``lvm`` (a volume group on one
    host), ``nfs`` (an NFS export libvirt mounts on every host of a cluster), ``rbd``
    (a Ceph pool, ``path`` its name, reached at ``monitors`` as the cephx user
    ``auth_user``, whose key ``auth_key`` is kept encrypted; every host of the cluster
    has it as a libvirt secret whose UUID is the pool's id), ``iscsi`` (an iSCSI
    target, ``path`` its IQN, at ``portal``, logged into as ``initiator``, with CHAP
    user ``auth_user`` and secret ``auth_key`` if it wants them; its LUNs are made on
    the SAN and become volumes when adopted).
    """

    __tablename__ = "storage_pools"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(255))  # directory / mount point / VG name
    nfs_server: Mapped[str | None] = mapped_column(String(255))
    nfs_export: Mapped[str | None] = mapped_column(String(255))
    monitors: Mapped[list[str] | None] = mapped_column(JSON)  # rbd: host:port of each
    auth_user: Mapped[str | None] = mapped_column(String(64))
    auth_key: Mapped[str | None] = mapped_column(Text)  # encrypted (SecretBox)
    portal: Mapped[str | None] = mapped_column(String(255))  # iscsi: address:port
    initiator: Mapped[str | None] = mapped_column(String(223))  # iscsi: our IQN
    cluster_id: Mapped[str | None] = mapped_column(ForeignKey("clusters.id"), index=True)
    host_id: Mapped[str | None] = mapped_column(ForeignKey("hosts.id"), index=True)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    state: Mapped[str] = mapped_column(String(16), default=PoolState.ACTIVE)
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
    __table_args__ = (
        UniqueConstraint("project_id", "name"),
        # a LUN of an iSCSI pool is one volume (NULLs, volumes of other pools, differ)
        Index("ix_volumes_pool_lun", "pool_id", "lun", unique=True),
    )
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
    status: Mapped[str] = mapped_column(String(16), default=VolumeStatus.CREATING)
    task_state: Mapped[str | None] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    # bumped when the volume's data is replaced by a new file (a revert to a snapshot):
    # the new file is made beside the old one, and the switch is one database update
    generation: Mapped[int] = mapped_column(Integer, default=0)
    lun: Mapped[int | None] = mapped_column(Integer)  # iscsi: the LUN it is
    # rbd: the image whose copy in the pool (its base) this volume is an RBD clone of
    base_image_id: Mapped[str | None] = mapped_column(String(36), index=True)
    # rbd: the volume snapshot (a Ceph snapshot of another volume) this one is a clone of
    base_snapshot_id: Mapped[str | None] = mapped_column(String(36), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    @property
    def libvirt_name(self) -> str:
        if self.lun is not None:
            return f"unit:0:0:{self.lun}"  # libvirt's name of an iscsi-direct LUN
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
    status: Mapped[str] = mapped_column(String(16), default=VolumeSnapshotStatus.CREATING)
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
    status: Mapped[str] = mapped_column(String(16), default=AttachmentStatus.ATTACHING)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    @property
    def serial(self) -> str:
        """virtio-blk serials hold 20 bytes: the volume id without dashes, cut."""
        return self.volume_id.replace("-", "")[:20]
