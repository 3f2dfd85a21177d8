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

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from nubis.db.models import (
    AttachmentStatus,
    Cluster,
    DiskOffering,
    Flavor,
    Host,
    Image,
    Instance,
    PoolState,
    StoragePool,
    Volume,
    VolumeAttachment,
    VolumeSnapshot,
)
from nubis.services.core.errors import BadRequest, Conflict, Forbidden
from nubis.services.core.lookup import get_by_id_or_name
from nubis.services.core.principal import Principal
from nubis.services.identity import policy
from nubis.services.storage.volumes import (
    IMAGE_POOLS,
    ROOT_TARGET,
    VolumeRequest,
    VolumeService,
    pick_pool,
)


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


def check_default(pool: StoragePool) -> None:
    """A pool that can be a flavor's or a cluster's pool for root disks."""
    if pool.kind not in IMAGE_POOLS:
        raise BadRequest(
            f"a root disk is made in a file or rbd pool, not in {pool.kind} pool {pool.name!r}"
        )
    if pool.state != PoolState.ACTIVE:
        raise Conflict(f"storage pool {pool.name!r} is {pool.state}")


def flavor_pool(session: Session, ref: str | None) -> str | None:
    """The id of the pool a flavor names for its instances' root disks."""
    if not ref:
        return None
    pool = get_by_id_or_name(session, StoragePool, ref, "storage pool")
    check_default(pool)
    return pool.id


def set_cluster_pool(session: Session, cluster: Cluster, ref: str) -> None:
    """The cluster's pool for root disks (``""``: none, files on each host)."""
    if not ref:
        cluster.root_pool_id = None
        return
    pool = get_by_id_or_name(session, StoragePool, ref, "storage pool")
    check_default(pool)
    if pool.cluster_id != cluster.id:
        raise BadRequest(
            f"storage pool {pool.name!r} is not a pool of cluster {cluster.name!r}: "
            "every host of the cluster must reach its default root pool"
        )
    cluster.root_pool_id = pool.id


@dataclass(frozen=True)
class RootRequest:
    pool: str | None = None  # a pool by id or name (system administrators)
    offering: str | None = None  # a disk offering whose tags pick the pool (anyone)
    cluster_id: str | None = None  # the cluster the instance goes to, if known yet


def requested(
    session: Session, principal: Principal, req: RootRequest, flavor: Flavor
) -> tuple[StoragePool | None, bool | None]:
    """The pool a create request's root disk goes to: the one it names (system
    administrators), the one its disk offering's tags pick, else its flavor's; None:
    the cluster's default, if any. And the volume's secure delete (None: the
    default), which an offering says."""
    secure = None
    if req.pool:
        if policy.SYSTEM_ADMIN not in principal.roles:
            raise Forbidden("choosing the root disk's storage pool is for system administrators")
        if req.offering:
            raise BadRequest("give root_pool or root_offering, not both")
        pool = get_by_id_or_name(session, StoragePool, req.pool, "storage pool")
    elif req.offering:
        offering = get_by_id_or_name(session, DiskOffering, req.offering, "disk offering")
        pool = pick_pool(
            session,
            list(offering.tags or []),
            lambda p: p.kind in IMAGE_POOLS and in_cluster(session, p, req.cluster_id),
        )
        secure = offering.secure_delete
    elif flavor.root_pool_id is not None:
        found = session.get(StoragePool, flavor.root_pool_id)
        assert found is not None  # a pool a flavor names is not deleted
        pool = found
    else:
        return None, None
    if pool.state != PoolState.ACTIVE:
        raise Conflict(f"storage pool {pool.name!r} is {pool.state}")
    return pool, secure


def in_cluster(session: Session, pool: StoragePool, cluster_id: str | None) -> bool:
    """Whether the pool's volumes reach instances of the cluster (any: None)."""
    if cluster_id is None:
        return True
    if pool.host_id is not None:
        host = session.get(Host, pool.host_id)
        return host is not None and host.cluster_id == cluster_id
    return pool.cluster_id == cluster_id


def placement(
    pool: StoragePool, cluster_id: str | None, host_id: str | None
) -> tuple[str | None, str | None]:
    """(cluster, host) an instance whose root disk is in ``pool`` may be placed on."""
    if pool.cluster_id is not None:
        if cluster_id not in (None, pool.cluster_id):
            raise BadRequest(f"storage pool {pool.name!r} is in another cluster")
        return pool.cluster_id, host_id
    if pool.host_id is not None:
        if host_id not in (None, pool.host_id):
            raise BadRequest(f"storage pool {pool.name!r} is another host's")
        return cluster_id, pool.host_id
    return cluster_id, host_id


def cluster_default(session: Session, cluster_id: str | None, image: Image) -> StoragePool | None:
    """The cluster's root pool (every host of it reaches it), for a disk image; an
    installer ISO installs onto a blank disk in the host's disk pool."""
    cluster = session.get(Cluster, cluster_id) if cluster_id else None
    if cluster is None or cluster.root_pool_id is None or image.disk_format == "iso":
        return None
    pool = session.get(StoragePool, cluster.root_pool_id)
    assert pool is not None
    if pool.state != PoolState.ACTIVE:
        raise Conflict(
            f"storage pool {pool.name!r}, cluster {cluster.name!r}'s root pool, is {pool.state}"
        )
    return pool


def plan(
    session: Session,
    principal: Principal,
    volumes: VolumeService,
    instance: Instance,
    image: Image,
    flavor: Flavor,
    pool: StoragePool,
    secure_delete: bool | None = None,
) -> Volume:
    """The instance's root volume (made by its create task), attached as ``vda``."""
    volume = volumes.plan(
        session,
        principal,
        VolumeRequest(
            name=f"{instance.name}-root",
            size_gib=flavor.disk_gib,
            image=image.id,
            secure_delete=secure_delete,
        ),
        pool,
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
