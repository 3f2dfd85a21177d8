"""Request and response bodies of storage: pools, disk offerings, volumes, attachments."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from nubis.api.schemas import In, Out


class PoolIn(In):
    name: str
    kind: str = Field(description="dir | lvm (one host) or shared | nfs | rbd | iscsi (a cluster)")
    path: str = Field(
        description="directory (dir, shared), mount point (nfs), VG name (lvm), Ceph pool (rbd) "
        "or target IQN (iscsi)"
    )
    host: str | None = Field(default=None, description="for dir and lvm pools")
    cluster: str | None = Field(default=None, description="for shared, nfs and rbd pools")
    nfs_server: str | None = None
    nfs_export: str | None = None
    tags: list[str] = Field(default_factory=list)
    monitors: list[str] = Field(
        default_factory=list, description="rbd: the Ceph monitors, address[:port] (port 6789)"
    )
    auth_user: str | None = Field(
        default=None, description="rbd: the cephx user (e.g. nubis); iscsi: the CHAP user"
    )
    auth_key: str | None = Field(
        default=None,
        description="rbd: the cephx user's key; iscsi: the CHAP secret (kept encrypted, never "
        "shown)",
    )
    portal: str | None = Field(default=None, description="iscsi: the target's address[:port]")
    initiator: str | None = Field(
        default=None, description="iscsi: the IQN the hosts log in as (default: one per pool)"
    )


class PoolOut(Out):
    id: str
    name: str
    kind: str
    path: str
    nfs_server: str | None
    nfs_export: str | None
    monitors: list[str] | None
    auth_user: str | None
    portal: str | None
    initiator: str | None
    host_id: str | None
    cluster_id: str | None
    tags: list[str]
    state: str
    error: str | None
    capacity_bytes: int
    allocation_bytes: int
    available_bytes: int
    refreshed_at: datetime | None
    created_at: datetime


class LunOut(Out):
    lun: int
    size_bytes: int
    volume_id: str | None = Field(description="the volume that is this LUN, if one is")


class OfferingIn(In):
    name: str
    size_gib: int | None = Field(default=None, description="None: the user chooses the size")
    format: str = "qcow2"
    provisioning: str = Field(default="thin", description="thin | thick | thick-lazy-zeroed")
    secure_delete: bool = False
    tags: list[str] = Field(default_factory=list, description="pools must carry these tags")


class OfferingOut(Out):
    id: str
    name: str
    size_gib: int | None
    format: str
    provisioning: str
    secure_delete: bool
    tags: list[str]
    created_at: datetime


class VolumeIn(In):
    name: str
    size_gib: int | None = None
    pool: str | None = None
    offering: str | None = None
    format: str | None = Field(default=None, description="qcow2 (default) | raw")
    provisioning: str | None = Field(default=None, description="thin (default) | thick | ...")
    secure_delete: bool | None = Field(
        default=None, description="overwrite the data before removal"
    )
    shareable: bool = Field(default=False, description="may be attached to several instances")
    snapshot: str | None = Field(
        default=None, description="a volume snapshot (id, or name) to copy the data from"
    )
    lun: int | None = Field(
        default=None, description="iscsi pools: the LUN (made on the SAN) this volume is"
    )
    image: str | None = Field(
        default=None,
        description="an image (id, or name) whose disk the volume holds: at least its size; "
        "raw in rbd pools, the image's format in file pools",
    )


class AttachmentOut(Out):
    volume_id: str
    instance_id: str
    target: str
    serial: str
    mode: str
    status: str


class VolumeOut(Out):
    id: str
    name: str
    pool_id: str
    offering_id: str | None
    size_gib: int
    format: str
    provisioning: str
    secure_delete: bool
    shareable: bool
    lun: int | None
    status: str
    task_state: str | None
    error: str | None
    created_at: datetime
    attachments: list[AttachmentOut] = Field(default_factory=list)


class VolumeAccepted(VolumeOut):
    task_id: str


class ExtendIn(In):
    size_gib: int


class MoveIn(In):
    pool: str = Field(description="the storage pool (name or id) the volume moves to")
    max_bandwidth_mib_s: int | None = Field(
        default=None, ge=1, le=1_000_000, description="a live copy's limit (MiB/s)"
    )


class AttachIn(In):
    volume: str
    mode: str = Field(default="persistent", description="persistent | nonpersistent")


class AttachAccepted(AttachmentOut):
    task_id: str


class SnapshotIn(In):
    name: str


class SnapshotOut(Out):
    id: str
    name: str
    instance_id: str
    memory: bool
    volume_ids: list[str]
    status: str
    task_state: str | None
    error: str | None
    created_at: datetime


class SnapshotAccepted(SnapshotOut):
    task_id: str


class VolumeSnapshotOut(Out):
    id: str
    name: str
    volume_id: str
    size_gib: int
    live_instance_id: str | None = Field(
        description="the running instance whose disk was frozen while it was copied"
    )
    status: str
    task_state: str | None
    error: str | None
    created_at: datetime


class VolumeSnapshotAccepted(VolumeSnapshotOut):
    task_id: str
