"""Root disks on a storage pool (Nova's boot from volume, deleted with its instance):
the root disk is a volume made from the image in the pool the request names,
attached as ``vda`` and opened there by the instance's definition. On an RBD pool it
is an RBD image QEMU opens through librbd, reachable from every host of the pool's
cluster: live migration and HA restarts need no shared directory for it.

What works on root disk files only (instance snapshots, templates and clones of the
instance, a resize that grows the disk) is refused for these instances with a clear
409; their volume is extended, snapshotted and moved as a volume instead.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from nubis.db.models import (
    AttachmentStatus,
    Flavor,
    Image,
    Instance,
    StoragePool,
    Volume,
    VolumeAttachment,
    VolumeSnapshot,
)
from nubis.services.core.errors import BadRequest, Conflict
from nubis.services.core.principal import Principal
from nubis.services.storage.volumes import IMAGE_POOLS, ROOT_TARGET, VolumeRequest, VolumeService


def check_pool(pool: StoragePool, image: Image) -> None:
    """A pool a root disk can be made in, from this image."""
    if image.disk_format == "iso":
        raise BadRequest(
            "an installer ISO installs onto a blank disk in the host's disk pool: "
            "root_pool is for disk images"
        )
    if pool.kind not in IMAGE_POOLS:
        raise BadRequest(
            f"a root disk is made in a file or rbd pool, not in {pool.kind} pool {pool.name!r}"
        )


def plan(
    session: Session,
    principal: Principal,
    volumes: VolumeService,
    instance: Instance,
    image: Image,
    flavor: Flavor,
    pool: StoragePool,
) -> Volume:
    """The instance's root volume (made by its create task), attached as ``vda``."""
    volume = volumes.plan(
        session,
        principal,
        VolumeRequest(
            name=f"{instance.name}-root", size_gib=flavor.disk_gib, pool=pool.id, image=image.id
        ),
    )
    session.add(volume)
    session.flush()
    session.add(
        VolumeAttachment(
            volume_id=volume.id,
            instance_id=instance.id,
            target=ROOT_TARGET,
            mode="persistent",
            status=AttachmentStatus.ATTACHED,
        )
    )
    return volume


def find(session: Session, instance_id: str) -> Volume | None:
    """The instance's root volume, if its root disk is on a pool."""
    return session.scalar(
        select(Volume)
        .join(VolumeAttachment, VolumeAttachment.volume_id == Volume.id)
        .where(VolumeAttachment.instance_id == instance_id, VolumeAttachment.target == ROOT_TARGET)
    )


def check_deletable(session: Session, instance: Instance) -> None:
    """409 when the instance's root volume has snapshots: they would keep its data
    (an RBD image with snapshots cannot be removed), so they go first."""
    root = find(session, instance.id)
    if root is None:
        return
    names = session.scalars(
        select(VolumeSnapshot.name).where(VolumeSnapshot.volume_id == root.id)
    ).all()
    if names:
        raise Conflict(
            f"the root volume {root.name!r} of {instance.name!r} has snapshot(s) "
            f"{', '.join(names)}: delete them before the instance"
        )


def refuse(session: Session, instance: Instance, what: str) -> None:
    """409 when the instance's root disk is a volume: ``what`` needs a root disk file."""
    if find(session, instance.id) is not None:
        raise Conflict(
            f"instance {instance.name!r} has its root disk on a storage pool: {what} works "
            "on root disk files only (extend, snapshot or move its root volume instead)"
        )
