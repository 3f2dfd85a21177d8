"""Images copied once into an RBD pool, as the base of RBD clones.

A volume or root disk made from an image in an RBD pool is an **RBD clone** of the
image's copy in that pool (its *base*, ``nubis-base-<pool id>-<image id>.img``): made in an
instant whatever the image's size, copy-on-write inside Ceph, reachable from every
host of the pool's cluster. The base is made by the first clone: libvirt makes the
RBD image, qemu-img writes the image's disk into it, and a snapshot ``base`` taken
after that marks it whole (a base without it is the rest of an interrupted copy and
is made again). libvirt's clone finds that snapshot unchanged, protects it and
clones it.

An image whose bases have clones cannot be deleted (409 naming them, see
``ImageService.delete``); once it is deleted its bases leave every RBD pool
(``remove``), and at start-up the bases of images that no longer exist are removed
(``sweep``: a delete cut off by a crash). A pool's bases go with the pool.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from nubis.db.models import Image, PoolState, StoragePool
from nubis.db.session import Database
from nubis.drivers import rbd_images
from nubis.drivers.errors import DriverError
from nubis.drivers.libvirt.base import HostRef
from nubis.drivers.libvirt.volumes import PoolSpec, VolumeDriver
from nubis.keyed_locks import KeyedLocks
from nubis.services.core.errors import Unavailable
from nubis.services.inventory.hosts import HostService
from nubis.services.storage.pools import one_host, spec_of

log = logging.getLogger(__name__)
MIB = 1024 * 1024


@dataclass(frozen=True)
class BaseSource:
    """The image a base is copied from: its file, the format it was inspected as and
    its disk's size in bytes."""

    image_id: str
    path: Path
    fmt: str
    virtual_size: int


@dataclass(frozen=True)
class RbdPool:
    id: str
    ref: HostRef  # a host through which the pool is reached
    name: str  # libvirt's name of the pool
    spec: PoolSpec


LOCKS = KeyedLocks()  # one base is made at a time, per pool and image


def clone(
    driver: VolumeDriver, pool: RbdPool, source: BaseSource, name: str, capacity: int
) -> None:
    """The pool's image ``name``: an RBD clone of ``source``'s base, of ``capacity``
    bytes (the base is made first when the pool has none yet)."""
    base = ensure(driver, pool, source)
    driver.clone_volume(pool.ref, pool.name, base, name, capacity)


def ensure(driver: VolumeDriver, pool: RbdPool, source: BaseSource) -> str:
    """The name of the image's whole base in the pool, copied there if missing."""
    name = rbd_images.base_name(pool.id, source.image_id)
    with LOCKS((pool.id, source.image_id)):
        if name in driver.list_volumes(pool.ref, pool.name):
            if rbd_images.BASE_SNAPSHOT in rbd_images.snapshots(pool.spec, name):
                return name
            log.info("base %s in pool %s is partial: copied again", name, pool.name)
        driver.delete_volume(pool.ref, pool.name, name, with_snapshots=True)
        size = -(-source.virtual_size // MIB) * MIB
        driver.create_volume(pool.ref, pool.name, name, size, "raw", "thin")
        rbd_images.import_file(source.path, source.fmt, pool.spec, name)
        rbd_images.snapshot_create(pool.spec, name, rbd_images.BASE_SNAPSHOT)
    return name


class RbdBases:
    """The bases of the RBD pools Nubis knows: removed with their image."""

    def __init__(self, db: Database, driver: VolumeDriver, hosts: HostService) -> None:
        self.db = db
        self.driver = driver
        self.hosts = hosts

    def pools(self) -> list[RbdPool]:
        """The active RBD pools a host is up for."""
        found = []
        with self.db.read() as s:
            for pool in s.scalars(
                select(StoragePool).where(
                    StoragePool.kind == "rbd", StoragePool.state == PoolState.ACTIVE
                )
            ):
                try:
                    ref = one_host(s, pool, self.hosts)
                except Unavailable:
                    continue
                found.append(
                    RbdPool(pool.id, ref, pool.libvirt_name, spec_of(pool, self.hosts.box))
                )
        return found

    def remove(self, image_id: str) -> None:
        """The image's bases out of every RBD pool (the image is gone, so are their
        clones); a pool that cannot be reached now keeps its base until the sweep."""
        for pool in self.pools():
            name = rbd_images.base_name(pool.id, image_id)
            try:
                self.driver.delete_volume(pool.ref, pool.name, name, with_snapshots=True)
            except DriverError as exc:
                log.warning("base %s not removed from pool %s: %s", name, pool.name, exc)

    def sweep(self) -> None:
        """Start-up: remove the bases of images that no longer exist."""
        with self.db.read() as s:
            images = set(s.scalars(select(Image.id)))
        for pool in self.pools():
            try:
                names = self.driver.list_volumes(pool.ref, pool.name)
            except DriverError as exc:
                log.warning("bases of pool %s not swept: %s", pool.name, exc)
                continue
            prefix = rbd_images.base_prefix(pool.id)
            for name in names:
                image_id = name.removeprefix(prefix).removesuffix(".img")
                if name.startswith(prefix) and image_id not in images:
                    log.info("removing base %s of a deleted image from %s", name, pool.name)
                    try:
                        self.driver.delete_volume(pool.ref, pool.name, name, with_snapshots=True)
                    except DriverError as exc:
                        log.warning("base %s not removed: %s", name, exc)
