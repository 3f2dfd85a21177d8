"""Volumes (data disks) and disk offerings: validation and guarded state changes.
The work runs as tasks (``volume_tasks``).

A volume takes one operation at a time (a compare-and-swap on ``task_state``, as
instances do). Attaching or detaching also holds the instance (its ``task_state``
is ``attaching`` / ``detaching``), so a disk is never plugged into a VM that is
being deleted or migrated.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from nubis.db.models import (
    AttachmentStatus,
    DiskOffering,
    Host,
    Image,
    ImageStatus,
    Instance,
    InstanceStatus,
    PoolState,
    Snapshot,
    StoragePool,
    Task,
    Volume,
    VolumeAttachment,
    VolumeSnapshot,
    VolumeSnapshotStatus,
    VolumeStatus,
    new_id,
)
from nubis.drivers import rbd_images
from nubis.drivers.libvirt.domain_xml import DiskSpec, NetworkDisk
from nubis.drivers.libvirt.volumes import PROVISIONING
from nubis.services.core.errors import BadRequest, Conflict, Forbidden, NotFoundError, Unavailable
from nubis.services.core.guard import claim
from nubis.services.core.lookup import Page, PageRequest, get_by_id_or_name, paginate, validate_name
from nubis.services.core.principal import Principal
from nubis.services.core.submit import submit_task
from nubis.services.identity import policy, quotas
from nubis.services.storage.images import ROOT_DEVICE, get_visible
from nubis.services.storage.pools import check_tags, monitor_addresses, portal_address, reaches
from nubis.tasks.engine import TaskEngine

FORMATS = ("qcow2", "raw")
MODES = ("persistent", "nonpersistent")
MAX_GIB = 16384
GIB = 1024**3
# device names of data disks: vda is the root disk
TARGETS = tuple(f"vd{c}" for c in "bcdefghijklmnopqrstuvwxyz")
# the device of an instance's root disk (a volume when on a pool)
ROOT_TARGET = ROOT_DEVICE


@dataclass(frozen=True)
class VolumeRequest:
    name: str
    size_gib: int | None = None
    pool: str | None = None
    offering: str | None = None
    format: str | None = None
    provisioning: str | None = None
    secure_delete: bool | None = None
    shareable: bool = False
    snapshot: str | None = None  # a volume snapshot to copy the data from
    lun: int | None = None  # an iscsi pool's LUN to adopt (LUNs are made on the SAN)
    image: str | None = None  # an image to copy the data from (a bootable volume)
    # the format of the data an upload fills it with: kept in file pools, raw in RBD
    data_format: str | None = None


@dataclass(frozen=True)
class OfferingRequest:
    name: str
    size_gib: int | None = None
    format: str = "qcow2"
    provisioning: str = "thin"
    secure_delete: bool = False
    tags: list[str] = field(default_factory=list)


def check_size(size_gib: object) -> int:
    if not isinstance(size_gib, int) or isinstance(size_gib, bool) or not 1 <= size_gib <= MAX_GIB:
        raise BadRequest(f"size_gib must be a whole number of GiB between 1 and {MAX_GIB}")
    return size_gib


def check_layout(fmt: str, provisioning: str) -> None:
    if fmt not in FORMATS:
        raise BadRequest(f"format must be one of {', '.join(FORMATS)}")
    if provisioning not in PROVISIONING:
        raise BadRequest(f"provisioning must be one of {', '.join(PROVISIONING)}")
    if fmt == "qcow2" and provisioning == "thick":
        raise BadRequest(
            "thick (eager-zeroed) volumes are raw: use format raw, or thick-lazy-zeroed for qcow2"
        )


def create_offering(session: Session, req: OfferingRequest) -> DiskOffering:
    validate_name(req.name, "disk offering")
    if req.size_gib is not None:
        check_size(req.size_gib)
    check_layout(req.format, req.provisioning)
    check_tags(req.tags)
    if session.scalar(select(DiskOffering).where(DiskOffering.name == req.name)) is not None:
        raise Conflict(f"a disk offering named {req.name!r} already exists")
    offering = DiskOffering(
        name=req.name,
        size_gib=req.size_gib,
        format=req.format,
        provisioning=req.provisioning,
        secure_delete=req.secure_delete,
        tags=list(req.tags),
    )
    session.add(offering)
    session.flush()
    return offering


def delete_offering(session: Session, ref: str) -> None:
    offering = get_by_id_or_name(session, DiskOffering, ref, "disk offering")
    session.execute(
        update(Volume).where(Volume.offering_id == offering.id).values(offering_id=None)
    )
    session.delete(offering)


def pick_pool(
    session: Session, tags: list[str], accept: Callable[[StoragePool], bool] | None = None
) -> StoragePool:
    """The active pool carrying every tag (and ``accept``-ed) with the most room left."""
    pools = [
        p
        for p in session.scalars(select(StoragePool).where(StoragePool.state == PoolState.ACTIVE))
        if set(tags) <= set(p.tags or []) and (accept is None or accept(p))
    ]
    if not pools:
        wanted = f" tagged {', '.join(tags)}" if tags else ""
        raise Conflict(
            f"no active storage pool{wanted}: a system administrator makes one (nubis pool create)"
        )
    return max(pools, key=lambda p: p.available_bytes)


class VolumeService:
    def __init__(self, engine: TaskEngine) -> None:
        self.engine = engine

    def get(self, session: Session, principal: Principal, ref: str) -> Volume:
        return get_by_id_or_name(session, Volume, ref, "volume", **principal.scope())

    def find_all(self, session: Session, principal: Principal, pages: PageRequest) -> Page:
        query = select(Volume).filter_by(**principal.scope())
        return paginate(session, query, Volume, pages)

    def attachments(self, session: Session, volume_id: str) -> list[VolumeAttachment]:
        return list(
            session.scalars(
                select(VolumeAttachment).where(VolumeAttachment.volume_id == volume_id)
            ).all()
        )

    def instance_attachments(self, session: Session, instance_id: str) -> list[VolumeAttachment]:
        return list(
            session.scalars(
                select(VolumeAttachment)
                .where(VolumeAttachment.instance_id == instance_id)
                .order_by(VolumeAttachment.target)
            ).all()
        )

    # -- create / delete / extend ------------------------------------------------------
    def create(
        self, session: Session, principal: Principal, req: VolumeRequest
    ) -> tuple[Volume, Task]:
        volume = self.plan(session, principal, req)
        params: dict[str, object] = {}
        if req.snapshot:
            source = find_snapshot(session, principal, req.snapshot)
            claim_for_clone(session, source)
            params["snapshot_id"] = source.id
        if req.image:
            params["image_id"] = get_visible(session, principal, req.image).id
        session.add(volume)
        session.flush()
        return volume, submit_task(
            self.engine, session, principal, "volume.create", "volume", volume.id, params
        )

    def plan(
        self,
        session: Session,
        principal: Principal,
        req: VolumeRequest,
        pool: StoragePool | None = None,
    ) -> Volume:
        """Check a request (and the project's quotas) and return the volume it describes
        (status ``creating``), not yet added to the session. ``pool``: the pool the
        caller chose for it (e.g. a flavor's for a root disk), whoever asks."""
        volume = self._plan(session, principal, req, pool)
        quotas.claim(session, volume.project_id, {"volumes": 1, "volume_gib": volume.size_gib})
        return volume

    def _plan(
        self,
        session: Session,
        principal: Principal,
        req: VolumeRequest,
        chosen: StoragePool | None = None,
    ) -> Volume:
        validate_name(req.name, "volume")
        if req.snapshot:
            if req.image:
                raise BadRequest("give a snapshot or an image, not both")
            return self._plan_from_snapshot(session, principal, req)
        image = self._check_image(session, principal, req) if req.image else None
        offering = (
            get_by_id_or_name(session, DiskOffering, req.offering, "disk offering")
            if req.offering
            else None
        )
        size = req.size_gib
        if offering is not None and offering.size_gib is not None:
            if size is not None and size != offering.size_gib:
                raise BadRequest(
                    f"disk offering {offering.name!r} has a fixed size of "
                    f"{offering.size_gib} GiB; leave size_gib out"
                )
            size = offering.size_gib
        if image is not None:
            least = -(-(image.virtual_size or 0) // GIB)  # whole GiB the image's disk needs
            if size is not None and check_size(size) < least:
                raise BadRequest(
                    f"image {image.name!r} is a {least} GiB disk: size_gib must be at least that"
                )
            size = max(size or 0, least, 1)
        if size is None:
            raise BadRequest("size_gib is required (or a disk offering with a size)")
        size = check_size(size)
        fmt = req.format or (offering.format if offering else "qcow2")
        provisioning = req.provisioning or (offering.provisioning if offering else "thin")
        secure = req.secure_delete
        if secure is None:
            secure = offering.secure_delete if offering else False
        if chosen is not None:
            pool = chosen
        elif req.pool:
            if policy.SYSTEM_ADMIN not in principal.roles:
                raise Forbidden(
                    "choosing the storage pool is for system administrators: give a disk "
                    "offering (its tags pick the pool), or nothing for the default"
                )
            pool = get_by_id_or_name(session, StoragePool, req.pool, "storage pool")
            if pool.state != PoolState.ACTIVE:
                raise Conflict(f"storage pool {pool.name!r} is {pool.state}")
        else:
            pool = pick_pool(session, list(offering.tags) if offering else [])
        if pool.kind not in FILE_POOLS:  # an RBD image, a LUN: the disk's bytes as they are
            if req.format not in (None, "raw"):
                raise BadRequest(f"volumes of {pool.kind} pool {pool.name!r} are raw")
            fmt = "raw"
        if image is not None:
            fmt = self._image_layout(pool, image, req, provisioning)
        if req.data_format is not None:
            fmt = "raw" if pool.kind == "rbd" else req.data_format
        lun = self._check_lun(session, pool, req.lun)
        if lun is not None:
            provisioning = "thin"  # the SAN made it; nothing is allocated here
        check_layout(fmt, provisioning)
        if provisioning != "thin" and size * GIB > pool.available_bytes:
            raise Conflict(
                f"storage pool {pool.name!r} has {pool.available_bytes // GIB} GiB free; "
                f"a {provisioning} volume of {size} GiB reserves all of it up front"
            )
        self._check_unique(session, principal, req.name)
        return Volume(
            id=new_id(),
            name=req.name,
            project_id=principal.project_id,
            pool_id=pool.id,
            offering_id=offering.id if offering else None,
            size_gib=size,
            format=fmt,
            provisioning=provisioning,
            secure_delete=secure,
            shareable=req.shareable,
            status=VolumeStatus.CREATING,
            task_state="creating",
            lun=lun,
            # in RBD an RBD clone of the image's copy there: the image is kept from now on
            base_image_id=image.id if image is not None and pool.kind == "rbd" else None,
        )

    @staticmethod
    def _check_image(session: Session, principal: Principal, req: VolumeRequest) -> Image:
        """The image a volume is made from: one the caller may use, whole, and a disk."""
        assert req.image is not None
        image = get_visible(session, principal, req.image)
        if image.status != ImageStatus.ACTIVE:
            raise Conflict(f"image {image.name!r} is {image.status}")
        if image.disk_format not in ("qcow2", "raw"):
            raise BadRequest(
                f"image {image.name!r} is an {image.disk_format} disc: a volume is made from "
                "a disk image (qcow2 or raw)"
            )
        if req.lun is not None:
            raise BadRequest("a LUN holds what the SAN put on it: give lun or image, not both")
        return image

    @staticmethod
    def _image_layout(
        pool: StoragePool, image: Image, req: VolumeRequest, provisioning: str
    ) -> str:
        """The format of a volume made from ``image`` in ``pool``: raw in RBD (the image
        converted by qemu-img), the image's own in a file pool (its file copied as it
        is, then grown)."""
        if pool.kind not in IMAGE_POOLS:
            raise BadRequest(
                f"a volume from an image is made in a file or rbd pool, not in {pool.kind} "
                f"pool {pool.name!r}"
            )
        if provisioning != "thin":
            raise BadRequest("a volume made from an image is thin-provisioned")
        if pool.kind == "rbd":
            return "raw"
        fmt = image.disk_format or "qcow2"
        if req.format not in (None, fmt):
            raise BadRequest(
                f"a volume from image {image.name!r} keeps its format ({fmt}) in file pools"
            )
        return fmt

    @staticmethod
    def _check_lun(session: Session, pool: StoragePool, lun: object) -> int | None:
        """An iscsi pool's volume is one of its LUNs, adopted once (the task checks the
        target has it, as big as the volume says); other pools make their volumes."""
        if pool.kind != "iscsi":
            if lun is not None:
                raise BadRequest("lun is for volumes of iscsi pools")
            return None
        if not isinstance(lun, int) or isinstance(lun, bool) or not 0 <= lun <= MAX_LUN:
            raise BadRequest(
                f"volumes of iscsi pool {pool.name!r} are LUNs the SAN made: give lun "
                f"(0-{MAX_LUN}; GET /storage-pools/{pool.name}/luns lists them)"
            )
        taken = session.scalar(select(Volume).where(Volume.pool_id == pool.id, Volume.lun == lun))
        if taken is not None:
            raise Conflict(f"LUN {lun} of pool {pool.name!r} is volume {taken.name!r} already")
        return lun

    def _plan_from_snapshot(
        self, session: Session, principal: Principal, req: VolumeRequest
    ) -> Volume:
        """A new volume holding a volume snapshot's data, in the snapshot's pool."""
        assert req.snapshot is not None
        if req.offering:
            raise BadRequest("give a snapshot or a disk offering, not both")
        source = find_snapshot(session, principal, req.snapshot)
        origin = session.get(Volume, source.volume_id)
        pool = session.get(StoragePool, origin.pool_id) if origin else None
        assert origin is not None and pool is not None
        if req.pool:
            asked = get_by_id_or_name(session, StoragePool, req.pool, "storage pool")
            if asked.id != pool.id:
                raise BadRequest(
                    f"a volume made from a snapshot is created in the snapshot's pool {pool.name!r}"
                )
        size = check_clone_size(
            source, check_size(req.size_gib) if req.size_gib is not None else None
        )
        fmt = req.format or origin.format
        if pool.kind == "rbd" and fmt != "raw":
            raise BadRequest(f"volumes of {pool.kind} pool {pool.name!r} are raw")
        if pool.kind == "rbd" and not rbd_images.has_tool():
            raise Unavailable(
                "the control plane lacks Ceph's rbd tool (Debian's ceph-common), which "
                "makes a volume from an RBD snapshot"
            )
        provisioning = req.provisioning or "thin"
        check_layout(fmt, provisioning)
        if provisioning != "thin":
            raise BadRequest("a volume made from a snapshot is thin-provisioned")
        self._check_unique(session, principal, req.name)
        return Volume(
            id=new_id(),
            name=req.name,
            project_id=principal.project_id,
            pool_id=pool.id,
            size_gib=size,
            format=fmt,
            provisioning=provisioning,
            secure_delete=origin.secure_delete if req.secure_delete is None else req.secure_delete,
            shareable=req.shareable,
            status=VolumeStatus.CREATING,
            task_state="creating",
            # in RBD an RBD clone of the snapshot: the snapshot is kept from now on
            base_snapshot_id=source.id if pool.kind == "rbd" else None,
        )

    @staticmethod
    def _check_unique(session: Session, principal: Principal, name: str) -> None:
        exists = session.scalar(
            select(Volume).where(Volume.project_id == principal.project_id, Volume.name == name)
        )
        if exists is not None:
            raise Conflict(f"a volume named {name!r} already exists")

    def delete(self, session: Session, principal: Principal, ref: str) -> tuple[Volume, Task]:
        volume = self.get(session, principal, ref)
        snapshots = session.scalars(
            select(VolumeSnapshot.name)
            .where(VolumeSnapshot.volume_id == volume.id)
            .order_by(VolumeSnapshot.created_at)
        ).all()
        if snapshots:
            raise Conflict(
                f"volume {volume.name!r} has {len(snapshots)} snapshot(s): "
                f"{', '.join(snapshots)}; delete them first"
            )
        attached = self.attachments(session, volume.id)
        if attached:
            names = [
                session.get(Instance, a.instance_id).name  # type: ignore[union-attr]
                for a in attached
            ]
            raise Conflict(
                f"volume {volume.name!r} is attached to {', '.join(names)}; detach it first"
            )
        claim(session, volume, (VolumeStatus.AVAILABLE, VolumeStatus.ERROR), "deleting", "volume")
        volume.status = VolumeStatus.DELETING
        return volume, submit_task(
            self.engine, session, principal, "volume.delete", "volume", volume.id
        )

    def extend(
        self, session: Session, principal: Principal, ref: str, size_gib: object
    ) -> tuple[Volume, Task]:
        volume = self.get(session, principal, ref)
        size = check_size(size_gib)
        if volume.lun is not None:
            raise BadRequest(f"volume {volume.name!r} is a LUN: its size is the SAN's to change")
        if size <= volume.size_gib:
            raise BadRequest(
                f"volume {volume.name!r} is {volume.size_gib} GiB: the new size must be larger "
                "(volumes never shrink)"
            )
        quotas.claim(session, volume.project_id, {"volume_gib": size - volume.size_gib})
        claim(session, volume, (VolumeStatus.AVAILABLE, VolumeStatus.IN_USE), "extending", "volume")
        return volume, submit_task(
            self.engine,
            session,
            principal,
            "volume.extend",
            "volume",
            volume.id,
            {"size_gib": size},
        )

    # -- attach / detach ------------------------------------------------------------------
    def attach(
        self,
        session: Session,
        principal: Principal,
        instance_ref: str,
        volume_ref: str,
        mode: str = "persistent",
    ) -> tuple[VolumeAttachment, Task]:
        if mode not in MODES:
            raise BadRequest(f"mode must be one of {', '.join(MODES)}")
        instance = get_by_id_or_name(
            session, Instance, instance_ref, "instance", **principal.scope()
        )
        volume = self.get(session, principal, volume_ref)
        host = session.get(Host, instance.host_id) if instance.host_id else None
        pool = session.get(StoragePool, volume.pool_id)
        assert pool is not None
        if host is None:
            raise Conflict(f"instance {instance.name!r} is not on any host")
        if not reaches(pool, host):
            raise Conflict(
                f"volume {volume.name!r} is in storage pool {pool.name!r}, which host "
                f"{host.name!r} of instance {instance.name!r} cannot reach"
            )
        attached = self.attachments(session, volume.id)
        if any(a.instance_id == instance.id for a in attached):
            raise Conflict(f"volume {volume.name!r} is already attached to {instance.name!r}")
        if attached and not volume.shareable:
            raise Conflict(
                f"volume {volume.name!r} is in use by another instance and is not shareable"
            )
        if mode == "nonpersistent" and (
            volume.shareable or instance.status != InstanceStatus.STOPPED
        ):
            raise BadRequest(
                "a nonpersistent disk is attached to a stopped instance, and cannot be "
                "shareable: its overlay is made when the instance starts"
            )
        used = set(
            session.scalars(
                select(VolumeAttachment.target).where(VolumeAttachment.instance_id == instance.id)
            ).all()
        )
        free = [t for t in TARGETS if t not in used]
        if not free:
            raise Conflict(f"instance {instance.name!r} has no free disk slot")
        claim(session, volume, (VolumeStatus.AVAILABLE, VolumeStatus.IN_USE), "attaching", "volume")
        claim(
            session,
            instance,
            (InstanceStatus.RUNNING, InstanceStatus.STOPPED, InstanceStatus.PAUSED),
            "attaching",
            "instance",
        )
        attachment = VolumeAttachment(
            volume_id=volume.id, instance_id=instance.id, target=free[0], mode=mode
        )
        session.add(attachment)
        volume.status = VolumeStatus.IN_USE
        session.flush()
        task = submit_task(
            self.engine,
            session,
            principal,
            "volume.attach",
            "volume",
            volume.id,
            {"attachment_id": attachment.id},
        )
        return attachment, task

    def detach(
        self, session: Session, principal: Principal, instance_ref: str, volume_ref: str
    ) -> Task:
        instance = get_by_id_or_name(
            session, Instance, instance_ref, "instance", **principal.scope()
        )
        volume = self.get(session, principal, volume_ref)
        attachment = session.scalar(
            select(VolumeAttachment).where(
                VolumeAttachment.volume_id == volume.id,
                VolumeAttachment.instance_id == instance.id,
            )
        )
        if attachment is None:
            raise NotFoundError(f"volume {volume.name!r} is not attached to {instance.name!r}")
        if attachment.target == ROOT_TARGET:
            raise Conflict(
                f"volume {volume.name!r} is the root disk of {instance.name!r}: it goes "
                "when the instance is deleted"
            )
        covering = [
            snap.name
            for snap in session.scalars(select(Snapshot).where(Snapshot.instance_id == instance.id))
            if volume.id in (snap.volume_ids or [])
        ]
        if covering:
            # a snapshot must keep every disk it covers (and libvirt 9.0 crashes when
            # deleting an internal snapshot one of whose disks has left the domain)
            raise Conflict(
                f"snapshot(s) {', '.join(covering)} of {instance.name!r} include volume "
                f"{volume.name!r}: delete them before detaching it"
            )
        claim(session, volume, (VolumeStatus.IN_USE,), "detaching", "volume")
        claim(
            session,
            instance,
            (
                InstanceStatus.RUNNING,
                InstanceStatus.STOPPED,
                InstanceStatus.PAUSED,
                InstanceStatus.ERROR,
            ),
            "detaching",
            "instance",
        )
        attachment.status = AttachmentStatus.DETACHING
        return submit_task(
            self.engine,
            session,
            principal,
            "volume.detach",
            "volume",
            volume.id,
            {"attachment_id": attachment.id},
        )


# what libvirt and qemu-img reach by path: files and block devices (not RBD images,
# not LUNs)
FILE_POOLS = ("dir", "shared", "lvm", "nfs")
IMAGE_POOLS = ("dir", "shared", "nfs", "rbd")  # where a volume can be made from an image
MAX_LUN = 16383


def files_only(pool: StoragePool, what: str) -> None:
    """Refuse ``what``, built on files (qcow2 overlays, qemu-img, libvirt streams), for
    a volume of a pool that has none."""
    if pool.kind not in FILE_POOLS:
        raise BadRequest(f"{what} is not available for volumes of {pool.kind} pool {pool.name!r}")


def pool_file(pool: StoragePool, name: str) -> str:
    """Where libvirt keeps the pool's volume ``name``: the same path on every host of a
    shared pool (pool paths are stored normalised, as libvirt keeps them)."""
    if pool.kind == "lvm":
        return f"/dev/{pool.path}/{name}"
    return f"{pool.path}/{name}"


def volume_path(pool: StoragePool, volume: Volume) -> str:
    if volume.lun is not None:
        return f"{pool.path}/{volume.lun}"  # the target's IQN / the LUN
    return pool_file(pool, volume.libvirt_name)


def network_disk(pool: StoragePool) -> NetworkDisk | None:
    """How QEMU reaches the images of an rbd pool, the LUNs of an iscsi pool (None: a
    pool of files)."""
    if pool.kind == "iscsi":
        return NetworkDisk(
            hosts=(portal_address(pool.portal),),
            auth_user=pool.auth_user or "",
            secret_uuid=pool.id,
            protocol="iscsi",
            initiator=pool.initiator,
        )
    if pool.kind != "rbd":
        return None
    return NetworkDisk(
        hosts=tuple(monitor_addresses(list(pool.monitors or []))),
        auth_user=pool.auth_user or "",
        secret_uuid=pool.id,
    )


def disk_spec(pool: StoragePool, volume: Volume, attachment: VolumeAttachment) -> DiskSpec:
    """The ``<disk>`` an attachment puts into the instance's domain."""
    return DiskSpec(
        path=volume_path(pool, volume),
        format=volume.format,
        target=attachment.target,
        serial=attachment.serial,
        shareable=volume.shareable,
        transient=attachment.mode == "nonpersistent",
        network=network_disk(pool),
    )


def attached_disks(session: Session, instance_id: str) -> list[DiskSpec]:
    """The instance's data disks, for a domain definition made anew (evacuation)."""
    disks = []
    for attachment in session.scalars(
        select(VolumeAttachment)
        .where(VolumeAttachment.instance_id == instance_id)
        .order_by(VolumeAttachment.target)
    ):
        volume = session.get(Volume, attachment.volume_id)
        assert volume is not None
        pool = session.get(StoragePool, volume.pool_id)
        assert pool is not None
        disks.append(disk_spec(pool, volume, attachment))
    return disks


def unreachable_volumes(session: Session, instance_id: str, host: Host) -> list[str]:
    """Names of the instance's volumes whose pools ``host`` cannot reach."""
    names = []
    for attachment in session.scalars(
        select(VolumeAttachment).where(VolumeAttachment.instance_id == instance_id)
    ):
        volume = session.get(Volume, attachment.volume_id)
        assert volume is not None
        pool = session.get(StoragePool, volume.pool_id)
        assert pool is not None
        if not reaches(pool, host):
            names.append(volume.name)
    return names


def release_attachments(session: Session, instance_id: str) -> None:
    """The instance is gone: its volumes are free again (or still in use by others)."""
    attachments = session.scalars(
        select(VolumeAttachment).where(VolumeAttachment.instance_id == instance_id)
    ).all()
    for attachment in attachments:
        session.delete(attachment)
    session.flush()
    for attachment in attachments:
        left = attachment_count(session, attachment.volume_id)
        session.execute(
            update(Volume)
            .where(Volume.id == attachment.volume_id)
            .values(status=VolumeStatus.IN_USE if left else VolumeStatus.AVAILABLE)
        )


def attachment_count(session: Session, volume_id: str) -> int:
    return session.scalar(select(func.count()).where(VolumeAttachment.volume_id == volume_id)) or 0


def volume_users(session: Session, volume_id: str) -> list[tuple[VolumeAttachment, Instance]]:
    """The volume's attachments and their instances, by instance name."""
    rows = session.execute(
        select(VolumeAttachment, Instance)
        .join(Instance, Instance.id == VolumeAttachment.instance_id)
        .where(VolumeAttachment.volume_id == volume_id)
        .order_by(Instance.name)
    ).all()
    return [(a, i) for a, i in rows]


def find_snapshot(session: Session, principal: Principal, ref: str) -> VolumeSnapshot:
    """A volume snapshot of the caller's project by id, or by name if only one has it."""
    mine = select(VolumeSnapshot).filter_by(**principal.scope())
    found = session.scalars(mine.where(VolumeSnapshot.id == ref)).all()
    if not found:
        found = session.scalars(mine.where(VolumeSnapshot.name == ref)).all()
    if not found:
        raise NotFoundError(f"volume snapshot {ref!r} not found")
    if len(found) > 1:
        raise Conflict(f"several volume snapshots are named {ref!r}: give its id")
    return found[0]


def claim_for_clone(session: Session, snapshot: VolumeSnapshot) -> None:
    """Hold a snapshot while a new volume is copied from it (it cannot go meanwhile)."""
    claim(session, snapshot, (VolumeSnapshotStatus.AVAILABLE,), "cloning", "volume snapshot")


def check_clone_size(snapshot: VolumeSnapshot, size_gib: int | None) -> int:
    if size_gib is None:
        return snapshot.size_gib
    if size_gib < snapshot.size_gib:
        raise BadRequest(
            f"volume snapshot {snapshot.name!r} is {snapshot.size_gib} GiB: a volume made "
            "from it is at least that large"
        )
    return size_gib


def release_hold(session: Session, volume_id: str, task_state: str) -> None:
    """End an operation that held the volume and the instances it is attached to
    (where it still holds them)."""
    session.execute(
        update(Volume)
        .where(Volume.id == volume_id, Volume.task_state == task_state)
        .values(task_state=None)
    )
    ids = select(VolumeAttachment.instance_id).where(VolumeAttachment.volume_id == volume_id)
    session.execute(
        update(Instance)
        .where(Instance.id.in_(ids), Instance.task_state == task_state)
        .values(task_state=None)
    )
