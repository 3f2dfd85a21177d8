"""The storage driver: libvirt storage pools Nubis manages, their volumes, and the
disks attached to domains. All through libvirt's API, so a remote host works like
the local one. Every method is idempotent (create-if-missing, delete-if-present).
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field

import libvirt

from nubis.drivers.errors import DriverError, NotFound
from nubis.drivers.libvirt import storage, streams
from nubis.drivers.libvirt.base import DriverBase, HostRef
from nubis.drivers.libvirt.domain_xml import DiskSpec, disk_source_path, disk_xml

PROVISIONING = ("thin", "thick", "thick-lazy-zeroed")
# pools whose volumes are carved out of block devices: a new volume gets space a
# deleted one had, with its bytes (a file in a directory pool reads zeros instead)
BLOCK_POOLS = ("logical",)


def zero_on_create(pool_type: str, provisioning: str) -> bool:
    """Whether a new volume must be overwritten with zeros before anyone reads it:
    ``thick`` always (eager-zeroed by definition); ``thick-lazy-zeroed`` on a block
    pool, where its reserved space still holds a former volume's bytes. (``thin`` on
    a block pool is a sparse volume over libvirt's zero device: it reads zeros.)"""
    if provisioning == "thick":
        return True
    return provisioning == "thick-lazy-zeroed" and pool_type in BLOCK_POOLS


@dataclass(frozen=True)
class PoolSpec:
    """A libvirt pool: ``dir`` (a directory; also a shared file system mounted on
    every host), ``logical`` (an LVM volume group), ``netfs`` (NFS, mounted by
    libvirt at ``path``), ``rbd`` (a Ceph pool, opened through librbd with the cephx
    key held in a libvirt secret) or ``iscsi-direct`` (an iSCSI target reached by
    libiscsi, no kernel initiator; a CHAP secret, if any, held in a libvirt secret)."""

    name: str
    type: str  # dir | logical | netfs | rbd | iscsi-direct
    path: str  # the directory, for logical /dev/<vg>, for netfs the mount point
    source_name: str | None = None  # logical: the volume group; rbd: the Ceph pool;
    # iscsi-direct: the target's IQN
    source_host: str | None = None  # netfs: the NFS server
    source_dir: str | None = None  # netfs: the export
    monitors: tuple[tuple[str, int], ...] = ()  # rbd: each monitor; iscsi: the portal
    auth_user: str | None = None  # rbd: the cephx user (no "client."); iscsi: CHAP's
    secret_uuid: str | None = None  # the libvirt secret holding the key
    secret: bytes | None = field(default=None, repr=False)  # the key itself
    initiator: str | None = None  # iscsi-direct: the IQN the hosts log in as

    @property
    def secret_usage(self) -> str:
        return "iscsi" if self.type == "iscsi-direct" else "ceph"


@dataclass(frozen=True)
class PoolUsage:
    capacity: int
    allocation: int
    available: int


def pool_xml(spec: PoolSpec) -> str:
    pool = ET.Element("pool", type=spec.type)
    ET.SubElement(pool, "name").text = spec.name
    if spec.type in ("rbd", "iscsi-direct"):
        source = ET.SubElement(pool, "source")
        for address, port in spec.monitors:
            ET.SubElement(source, "host", name=address, port=str(port))
        if spec.type == "rbd":
            ET.SubElement(source, "name").text = spec.source_name
        else:
            ET.SubElement(source, "device", path=spec.source_name or "")
            ET.SubElement(ET.SubElement(source, "initiator"), "iqn", name=spec.initiator or "")
        if spec.auth_user:
            kind = "ceph" if spec.type == "rbd" else "chap"
            auth = ET.SubElement(source, "auth", type=kind, username=spec.auth_user)
            ET.SubElement(auth, "secret", uuid=spec.secret_uuid or "")
        return ET.tostring(pool, encoding="unicode")
    if spec.type in ("logical", "netfs"):
        source = ET.SubElement(pool, "source")
        if spec.type == "logical":
            ET.SubElement(source, "name").text = spec.source_name
            ET.SubElement(source, "format", type="lvm2")
        else:
            ET.SubElement(source, "host", name=spec.source_host or "")
            ET.SubElement(source, "dir", path=spec.source_dir or "")
            ET.SubElement(source, "format", type="nfs")
    target = ET.SubElement(pool, "target")
    ET.SubElement(target, "path").text = spec.path
    if spec.type == "dir":  # made by libvirt: QEMU, running as its own user, must enter it
        ET.SubElement(ET.SubElement(target, "permissions"), "mode").text = "0755"
    return ET.tostring(pool, encoding="unicode")


# a secret's usage type -> the element naming its usage, libvirt's usage constant
SECRET_USAGES = {
    "ceph": ("name", libvirt.VIR_SECRET_USAGE_TYPE_CEPH),
    "iscsi": ("target", libvirt.VIR_SECRET_USAGE_TYPE_ISCSI),
}


def secret_xml(uuid: str, usage_type: str, usage: str) -> str:
    """A private, persistent libvirt secret for a Ceph key or a CHAP secret (its
    value is set apart)."""
    secret = ET.Element("secret", ephemeral="no", private="yes")
    ET.SubElement(secret, "uuid").text = uuid
    element, _ = SECRET_USAGES[usage_type]
    ET.SubElement(ET.SubElement(secret, "usage", type=usage_type), element).text = usage
    return ET.tostring(secret, encoding="unicode")


def _ensure_secret(conn: libvirt.virConnect, spec: PoolSpec) -> None:
    assert spec.secret_uuid is not None and spec.secret is not None
    try:
        secret = conn.secretLookupByUUIDString(spec.secret_uuid)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_SECRET:
            raise
        xml = secret_xml(spec.secret_uuid, spec.secret_usage, spec.name)
        secret = conn.secretDefineXML(xml, 0)
    secret.setValue(spec.secret, 0)


def _remove_secret(conn: libvirt.virConnect, usage: str) -> None:
    """The pool's secret, whichever kind it is; none to remove where the driver keeps
    no secrets (libvirt's test driver)."""
    for _, usage_type in SECRET_USAGES.values():
        try:
            conn.secretLookupByUsage(usage_type, usage).undefine()
        except libvirt.libvirtError as exc:
            code = exc.get_error_code()
            if code == libvirt.VIR_ERR_NO_SUPPORT:
                return
            if code != libvirt.VIR_ERR_NO_SECRET:
                raise


class VolumeDriver(DriverBase):
    # -- pools ----------------------------------------------------------------------
    def ensure_pool(self, host: HostRef, spec: PoolSpec) -> PoolUsage:
        """Define, build, start and autostart the pool on the host (idempotent); an
        rbd pool's key first, as the libvirt secret the pool names."""

        def ensure(conn: libvirt.virConnect) -> PoolUsage:
            if spec.secret is not None:
                _ensure_secret(conn, spec)
            try:
                pool = conn.storagePoolLookupByName(spec.name)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_POOL:
                    raise
                pool = conn.storagePoolDefineXML(pool_xml(spec), 0)
                if spec.type == "dir":
                    pool.build(0)  # creates the directory; LVM and NFS exist already
                pool.setAutostart(1)
            if not pool.isActive():
                pool.create(0)
            storage.refresh(pool)
            return _usage(pool)

        return self._call(host, ensure, f"storage pool {spec.name}")

    def remove_pool(self, host: HostRef, name: str) -> None:
        """Stop and undefine the pool and its key's secret; its directory / volume
        group / export / Ceph pool stays."""

        def remove(conn: libvirt.virConnect) -> None:
            try:
                pool = conn.storagePoolLookupByName(name)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_POOL:
                    raise
            else:
                if pool.isActive():
                    pool.destroy()
                pool.undefine()
            _remove_secret(conn, name)

        self._call(host, remove, f"storage pool {name}")

    def list_volumes(self, host: HostRef, name: str) -> dict[str, int]:
        """name -> capacity in bytes of each volume of the pool, read afresh."""

        def volumes(conn: libvirt.virConnect) -> dict[str, int]:
            pool = conn.storagePoolLookupByName(name)
            storage.refresh(pool)
            return {vol.name(): vol.info()[1] for vol in pool.listAllVolumes(0)}

        return self._call(host, volumes, f"storage pool {name}")

    def pool_usage(self, host: HostRef, name: str) -> PoolUsage:
        def usage(conn: libvirt.virConnect) -> PoolUsage:
            pool = conn.storagePoolLookupByName(name)
            storage.refresh(pool)
            return _usage(pool)

        return self._call(host, usage, f"storage pool {name}")

    # -- volumes --------------------------------------------------------------------
    def create_volume(
        self, host: HostRef, pool_name: str, name: str, capacity: int, fmt: str, provisioning: str
    ) -> str:
        """Create the volume if it is missing; returns its path. ``thick`` is written
        with zeros (eager), ``thick-lazy-zeroed`` only reserved (and zeroed on a block
        pool, see ``zero_on_create``), ``thin`` sparse."""
        if provisioning not in PROVISIONING:
            raise ValueError(f"unknown provisioning {provisioning!r}")

        def create(conn: libvirt.virConnect) -> str:
            pool = conn.storagePoolLookupByName(pool_name)
            existing = storage.find_volume(pool, name)
            if existing is not None:
                return existing.path()
            flags = 0
            if fmt == "qcow2" and provisioning != "thin":
                flags |= libvirt.VIR_STORAGE_VOL_CREATE_PREALLOC_METADATA  # falloc
            # thin: nothing allocated up front; the thick modes reserve the whole size
            allocation = 0 if provisioning == "thin" else capacity
            vol = pool.createXML(
                storage.volume_xml(name, capacity, fmt, allocation=allocation), flags
            )
            try:
                if zero_on_create(pool_type(pool), provisioning):
                    vol.wipe(0)  # zeros written over the whole, reserved, volume
            except BaseException:
                vol.delete(0)
                raise
            return vol.path()

        return self._call(host, create, f"volume {name}")

    def delete_volume(
        self, host: HostRef, pool_name: str, name: str, with_snapshots: bool = False
    ) -> bool:
        """Delete the volume if it exists; ``with_snapshots``: an RBD image with its
        snapshots (unprotected first; refused while clones depend on one)."""
        flags = libvirt.VIR_STORAGE_VOL_DELETE_WITH_SNAPSHOTS if with_snapshots else 0
        return self._call(
            host,
            lambda c: storage.delete_volume(c.storagePoolLookupByName(pool_name), name, flags),
            f"volume {name}",
        )

    def clone_volume(
        self, host: HostRef, pool_name: str, origin: str, name: str, capacity: int
    ) -> None:
        """``name``: an RBD clone of the pool's image ``origin`` (libvirt clones from a
        protected snapshot of it that has no changes since, made if there is none),
        grown to ``capacity`` bytes. A clone an interrupted run left is replaced."""

        def clone(conn: libvirt.virConnect) -> None:
            pool = conn.storagePoolLookupByName(pool_name)
            if pool_type(pool) != "rbd":
                raise DriverError(f"pool {pool_name} is no RBD pool: only RBD images are cloned")
            storage.delete_volume(pool, name)
            source = pool.storageVolLookupByName(origin)
            vol = pool.createXMLFrom(storage.volume_xml(name, source.info()[1], "raw"), source, 0)
            storage.grow(conn, vol, capacity, "raw")

        self._call(host, clone, f"clone {name} of {origin}")

    def wipe_volume(self, host: HostRef, pool_name: str, name: str) -> None:
        """Overwrite every byte with random data (libvirt's wipe, run by scrub), so
        nothing of the volume can be read back (an RBD image: with zeros, the one
        pattern libvirt writes there); nothing to do when it is gone."""

        def wipe(conn: libvirt.virConnect) -> None:
            pool = conn.storagePoolLookupByName(pool_name)
            vol = storage.find_volume(pool, name)
            if vol is not None:
                rbd = pool_type(pool) in ("rbd", "iscsi-direct")  # zeros only there
                zero, random = (
                    libvirt.VIR_STORAGE_VOL_WIPE_ALG_ZERO,
                    libvirt.VIR_STORAGE_VOL_WIPE_ALG_RANDOM,
                )
                vol.wipePattern(zero if rbd else random, 0)

        self._call(host, wipe, f"volume {name}")

    def resize_volume(
        self, host: HostRef, pool_name: str, name: str, capacity: int, fmt: str
    ) -> None:
        """Grow a volume recorded as ``fmt`` that no running domain uses (never shrinks)."""

        self._call(
            host,
            lambda c: storage.grow_volume(
                c, c.storagePoolLookupByName(pool_name), name, capacity, fmt
            ),
            f"volume {name}",
        )

    def copy_volume(
        self,
        host: HostRef,
        pool_name: str,
        name: str,
        source_path: str,
        source_format: str,
        fmt: str,
        capacity: int = 0,
    ) -> str:
        """A full, flattened copy (``fmt``) of the volume at ``source_path``, read as its
        recorded ``source_format``, as ``name`` in the pool (see ``storage.copy_from``);
        a partial one from an interrupted run is replaced."""
        return self._call(
            host,
            lambda c: storage.copy_from(
                c,
                c.storagePoolLookupByName(pool_name),
                name,
                source_path,
                source_format,
                fmt,
                capacity,
            ),
            f"copy into volume {name}",
        )

    # -- data in and out ---------------------------------------------------------------
    def open_upload(
        self, host: HostRef, pool_name: str, name: str, length: int
    ) -> streams.VolumeUpload:
        """A new volume of ``length`` bytes, to be filled by the returned upload from
        its first byte to its last (an image's file as it is: qcow2 or raw)."""
        what = f"upload into volume {name}"

        def open_(conn: libvirt.virConnect) -> streams.VolumeUpload:
            pool = conn.storagePoolLookupByName(pool_name)
            storage.delete_volume(pool, name)  # a partial upload from an interrupted run
            vol = pool.createXML(storage.volume_xml(name, length, "raw", allocation=0), 0)
            try:
                return streams.open_upload(conn, vol, length, what)
            except BaseException:
                vol.delete(0)
                raise

        return self._call(host, open_, what)

    def open_download(self, host: HostRef, pool_name: str, name: str) -> streams.VolumeDownload:
        what = f"download of volume {name}"

        def open_(conn: libvirt.virConnect) -> streams.VolumeDownload:
            vol = storage.find_volume(conn.storagePoolLookupByName(pool_name), name)
            if vol is None:
                raise NotFound(f"volume {name}")
            return streams.open_download(conn, vol, what)

        return self._call(host, open_, what)

    def download(
        self,
        host: HostRef,
        pool_name: str,
        name: str,
        write: Callable[[bytes], None],
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        """Stream a volume of the pool to ``write``, chunk by chunk."""
        streams.drain(self.open_download(host, pool_name, name), write, on_progress)

    # -- disks of domains -------------------------------------------------------------
    def attached_targets(self, host: HostRef, uuid: str) -> dict[str, str]:
        """target device -> source path of each disk in the domain's persistent config."""

        def targets(conn: libvirt.virConnect) -> dict[str, str]:
            xml = self._domain(conn, uuid).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
            return {dev: path or "" for dev, path in _disk_sources(xml).items()}

        return self._call(host, targets, f"domain {uuid}")

    def attach_disk(self, host: HostRef, uuid: str, disk: DiskSpec) -> None:
        """Add the disk to the domain's config, and hot-plug it when it runs."""

        def attach(conn: libvirt.virConnect) -> None:
            dom = self._domain(conn, uuid)
            flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG
            if dom.isActive():
                flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
            dom.attachDeviceFlags(disk_xml(disk), flags)

        self._call(host, attach, f"domain {uuid}")

    def detach_disk(self, host: HostRef, uuid: str, disk: DiskSpec, timeout: float = 30) -> None:
        """Remove the disk from the config and, when the domain runs, unplug it and
        wait until the guest has let it go."""

        def detach(conn: libvirt.virConnect) -> None:
            dom = self._domain(conn, uuid)
            xml = disk_xml(disk)
            if dom.isActive():
                _unplug(dom, xml, disk.target, timeout)
            try:
                dom.detachDeviceFlags(xml, libvirt.VIR_DOMAIN_AFFECT_CONFIG)
            except libvirt.libvirtError as exc:
                if "not found" not in (exc.get_error_message() or ""):
                    raise

        self._call(host, detach, f"domain {uuid}")

    # -- freezing a disk of a running domain (for a consistent copy) ------------------
    def disk_source(self, host: HostRef, uuid: str, target: str) -> tuple[bool, str | None]:
        """Whether the domain runs, and the file its disk ``target`` is on: in the
        running machine, else in the definition (None: no such disk)."""

        def source(conn: libvirt.virConnect) -> tuple[bool, str | None]:
            dom = self._domain(conn, uuid)
            active = bool(dom.isActive())
            flags = 0 if active else libvirt.VIR_DOMAIN_XML_INACTIVE
            return active, _disk_sources(dom.XMLDesc(flags)).get(target)

        return self._call(host, source, f"domain {uuid}")

    def freeze_disk(self, host: HostRef, uuid: str, target: str, overlay: str) -> None:
        """Put a new qcow2 overlay file ``overlay`` on top of the running domain's disk
        ``target`` (an external disk-only snapshot of that disk alone): the guest writes
        into the overlay, and the file under it stops changing, so it can be copied
        consistently. Idempotent: a disk already on ``overlay`` is left as it is."""

        def freeze(conn: libvirt.virConnect) -> None:
            dom = self._domain(conn, uuid)
            sources = _disk_sources(dom.XMLDesc(0))
            if sources.get(target) == overlay:
                return
            snap = ET.Element("domainsnapshot")
            disks = ET.SubElement(snap, "disks")
            for dev in sources:
                if dev != target:
                    ET.SubElement(disks, "disk", name=dev, snapshot="no")
            disk = ET.SubElement(disks, "disk", name=target, snapshot="external")
            ET.SubElement(disk, "driver", type="qcow2")
            ET.SubElement(disk, "source", file=overlay)
            dom.snapshotCreateXML(
                ET.tostring(snap, encoding="unicode"),
                libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY
                | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA
                | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC,
            )

        self._call(host, freeze, f"disk {target} of domain {uuid}")

    def merge_disk(
        self, host: HostRef, uuid: str, target: str, base: str, timeout: float = 600
    ) -> None:
        """Commit what the guest wrote into the overlay on top of ``base`` back into it,
        and move the domain's disk ``target`` onto ``base`` again (active block commit,
        then pivot), in its definition too. Idempotent: a disk on ``base`` needs nothing.
        A domain that stopped while frozen is started paused for the merge."""

        def merge(conn: libvirt.virConnect) -> None:
            dom = self._domain(conn, uuid)
            if not dom.isActive():
                xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
                if _disk_sources(xml).get(target) == base:
                    return
                # the guest powered off while frozen: only a running QEMU commits, so
                # start it paused (the guest never runs), merge, and stop it again
                dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
                try:
                    merge(conn)
                finally:
                    dom.destroy()
                return
            if _disk_sources(dom.XMLDesc(0)).get(target) == base:
                return
            if not dom.blockJobInfo(target, 0):
                dom.blockCommit(target, None, None, 0, libvirt.VIR_DOMAIN_BLOCK_COMMIT_ACTIVE)
            _pivot_when_ready(dom, target, base, lambda _done: None, timeout, "merging")

        self._call(host, merge, f"disk {target} of domain {uuid}")

    def replace_disk(self, host: HostRef, uuid: str, old: DiskSpec, new: DiskSpec) -> None:
        """In a stopped domain's definition, put disk ``new`` where ``old`` was (the same
        device, another file). Idempotent."""

        def replace(conn: libvirt.virConnect) -> None:
            dom = self._domain(conn, uuid)
            if dom.isActive():
                raise DriverError(f"domain {uuid} runs: its disks cannot be swapped")
            sources = _disk_sources(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
            if sources.get(new.target) == new.path:
                return
            if new.target in sources:
                dom.detachDeviceFlags(disk_xml(old), libvirt.VIR_DOMAIN_AFFECT_CONFIG)
            dom.attachDeviceFlags(disk_xml(new), libvirt.VIR_DOMAIN_AFFECT_CONFIG)

        self._call(host, replace, f"domain {uuid}")

    def copy_disk(
        self,
        host: HostRef,
        uuid: str,
        old: DiskSpec,
        new: DiskSpec,
        on_progress: Callable[[int], None],
        timeout: float = 3600,
        bandwidth: int = 0,
    ) -> None:
        """Move the running domain's disk ``old`` onto ``new`` (made beforehand, as big)
        while the guest runs: a block copy mirrors the disk into ``new`` (at most
        ``bandwidth`` bytes/s; 0: as fast as it goes), then the domain pivots onto it,
        in its definition too. ``on_progress`` gets the percent copied (and may raise
        to stop: the job is then left to ``abort_copy``). Idempotent: a copy under way
        is waited for, a disk already on ``new`` needs nothing."""

        def copy(conn: libvirt.virConnect) -> None:
            dom = self._domain(conn, uuid)
            if not dom.isActive():
                raise DriverError(f"domain {uuid} is not running: its disk is not copied live")
            target = old.target
            if _disk_sources(dom.XMLDesc(0)).get(target) != new.path:
                if not dom.blockJobInfo(target, 0):
                    limit = {libvirt.VIR_DOMAIN_BLOCK_COPY_BANDWIDTH: bandwidth}
                    dom.blockCopy(
                        target,
                        disk_xml(new),
                        limit if bandwidth else None,
                        libvirt.VIR_DOMAIN_BLOCK_COPY_REUSE_EXT
                        | libvirt.VIR_DOMAIN_BLOCK_COPY_TRANSIENT_JOB,
                    )
                _pivot_when_ready(dom, target, new.path, on_progress, timeout, "copying")
            # the definition names the new disk too (libvirt rewrites it at the pivot
            # of a persistent domain's job; a pivot before a crash may predate that)
            config = _disk_sources(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
            if config.get(target) != new.path:
                if target in config:
                    dom.detachDeviceFlags(disk_xml(old), libvirt.VIR_DOMAIN_AFFECT_CONFIG)
                dom.attachDeviceFlags(disk_xml(new), libvirt.VIR_DOMAIN_AFFECT_CONFIG)

        self._call(host, copy, f"disk {old.target} of domain {uuid}")

    def abort_copy(self, host: HostRef, uuid: str, target: str) -> None:
        """Stop a block copy of the domain's disk that has not pivoted: the guest stays
        on its disk. Nothing to do when no job runs (or the domain is gone)."""

        def abort(conn: libvirt.virConnect) -> None:
            dom = self._find_domain(conn, uuid)
            if dom is not None and dom.isActive() and dom.blockJobInfo(target, 0):
                dom.blockJobAbort(target, 0)

        self._call(host, abort, f"disk {target} of domain {uuid}")

    def block_resize(self, host: HostRef, uuid: str, target: str, capacity: int) -> None:
        """Grow an attached disk of a running domain: the guest sees the new size."""
        self._call(
            host,
            lambda c: self._domain(c, uuid).blockResize(
                target, capacity, libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES
            ),
            f"disk {target} of domain {uuid}",
        )


POLL_SECONDS = 0.05  # how often a block job is looked at
PROGRESS_EVERY = 1.0  # seconds between two progress reports (each is a database write)


def _pivot_when_ready(
    dom: libvirt.virDomain,
    target: str,
    path: str,
    on_progress: Callable[[int], None],
    timeout: float,
    what: str,
) -> None:
    """Wait for the block job (a copy, an active commit) on ``target`` to be done, then
    pivot onto ``path``; until the domain's disk is on it."""
    deadline = time.monotonic() + timeout
    reported = 0.0  # when the progress was last handed on (at most once a second)
    while _disk_sources(dom.XMLDesc(0)).get(target) != path:
        now = time.monotonic()
        if now > deadline:
            raise DriverError(f"{what} disk {target} took more than {timeout:.0f}s")
        info = dom.blockJobInfo(target, 0)
        if not info:
            raise DriverError(f"{what} disk {target} stopped before it was done")
        end, cur = info.get("end", 0), info.get("cur", 0)
        if end and now - reported >= PROGRESS_EVERY:
            on_progress(100 * cur // end)
            reported = now
        if end > 0 and cur == end:
            try:
                dom.blockJobAbort(target, libvirt.VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_BLOCK_COPY_ACTIVE:
                    raise  # other than "not ready for pivot yet"
        time.sleep(POLL_SECONDS)


def _disk_sources(domain_xml: str) -> dict[str, str | None]:
    """target device -> file (or block device, or network image) of each disk of a
    domain description."""
    result: dict[str, str | None] = {}
    for disk in ET.fromstring(domain_xml).findall("./devices/disk"):
        target, source = disk.find("target"), disk.find("source")
        if target is not None:
            result[target.get("dev", "")] = disk_source_path(source) or None
    return result


def _live_targets(dom: libvirt.virDomain) -> set[str]:
    root = ET.fromstring(dom.XMLDesc(0))
    return {t.get("dev", "") for t in root.findall("./devices/disk/target")}


def _unplug(dom: libvirt.virDomain, xml: str, target: str, timeout: float) -> None:
    """Ask the guest to release the disk (PCI unplug) and wait until it has."""
    if target not in _live_targets(dom):
        return
    dom.detachDeviceFlags(xml, libvirt.VIR_DOMAIN_AFFECT_LIVE)
    deadline = time.monotonic() + timeout
    while target in _live_targets(dom):
        if time.monotonic() > deadline:
            raise DriverError(
                f"the guest did not release disk {target} within {timeout:.0f}s "
                "(is it in use, or does the guest ignore unplug requests?)"
            )
        time.sleep(0.2)


def pool_type(pool: libvirt.virStoragePool) -> str:
    return ET.fromstring(pool.XMLDesc(0)).get("type", "dir")


def _usage(pool: libvirt.virStoragePool) -> PoolUsage:
    _state, capacity, allocation, available = pool.info()
    return PoolUsage(capacity, allocation, available)
