"""The storage driver: libvirt storage pools Nubis manages, their volumes, and the
disks attached to domains. All through libvirt's API, so a remote host works like
the local one. Every method is idempotent (create-if-missing, delete-if-present).
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import libvirt

from nubis.drivers.errors import DriverError, NotFound
from nubis.drivers.libvirt import storage, streams
from nubis.drivers.libvirt.base import DriverBase, HostRef
from nubis.drivers.libvirt.domain_xml import DiskSpec, disk_xml

PROVISIONING = ("thin", "thick", "thick-lazy-zeroed")


@dataclass(frozen=True)
class PoolSpec:
    """A libvirt pool: ``dir`` (a directory; also a shared file system mounted on
    every host), ``logical`` (an LVM volume group) or ``netfs`` (NFS, mounted by
    libvirt at ``path``)."""

    name: str
    type: str  # dir | logical | netfs
    path: str  # the directory, or for logical /dev/<vg>, for netfs the mount point
    source_name: str | None = None  # logical: the volume group's name
    source_host: str | None = None  # netfs: the NFS server
    source_dir: str | None = None  # netfs: the export


@dataclass(frozen=True)
class VolumeFacts:
    format: str  # qcow2 | raw | ... as libvirt probes it
    capacity: int  # bytes the guest sees
    backing: bool  # the file names a backing file


@dataclass(frozen=True)
class PoolUsage:
    capacity: int
    allocation: int
    available: int


def pool_xml(spec: PoolSpec) -> str:
    pool = ET.Element("pool", type=spec.type)
    ET.SubElement(pool, "name").text = spec.name
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


class VolumeDriver(DriverBase):
    # -- pools ----------------------------------------------------------------------
    def ensure_pool(self, host: HostRef, spec: PoolSpec) -> PoolUsage:
        """Define, build, start and autostart the pool on the host (idempotent)."""

        def ensure(conn: libvirt.virConnect) -> PoolUsage:
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
        """Stop and undefine the pool; its directory / volume group / export stays."""

        def remove(conn: libvirt.virConnect) -> None:
            try:
                pool = conn.storagePoolLookupByName(name)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_POOL:
                    return
                raise
            if pool.isActive():
                pool.destroy()
            pool.undefine()

        self._call(host, remove, f"storage pool {name}")

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
        with zeros (eager), ``thick-lazy-zeroed`` only reserved, ``thin`` sparse."""
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
                if provisioning == "thick":
                    vol.wipe(0)  # zeros written over the whole, reserved, volume
            except BaseException:
                vol.delete(0)
                raise
            return vol.path()

        return self._call(host, create, f"volume {name}")

    def delete_volume(self, host: HostRef, pool_name: str, name: str) -> bool:
        return self._call(
            host,
            lambda c: storage.delete_volume(c.storagePoolLookupByName(pool_name), name),
            f"volume {name}",
        )

    def wipe_volume(self, host: HostRef, pool_name: str, name: str) -> None:
        """Overwrite every byte with random data (libvirt's wipe, run by scrub), so
        nothing of the volume can be read back; nothing to do when it is gone."""

        def wipe(conn: libvirt.virConnect) -> None:
            vol = storage.find_volume(conn.storagePoolLookupByName(pool_name), name)
            if vol is not None:
                vol.wipePattern(libvirt.VIR_STORAGE_VOL_WIPE_ALG_RANDOM, 0)

        self._call(host, wipe, f"volume {name}")

    def resize_volume(self, host: HostRef, pool_name: str, name: str, capacity: int) -> None:
        """Grow a volume that no running domain uses (never shrinks)."""

        def resize(conn: libvirt.virConnect) -> None:
            vol = storage.find_volume(conn.storagePoolLookupByName(pool_name), name)
            if vol is None:
                raise NotFound(f"volume {name}")
            if vol.info()[1] < capacity:
                vol.resize(capacity, 0)

        self._call(host, resize, f"volume {name}")

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

    def inspect_volume(self, host: HostRef, pool_name: str, name: str) -> VolumeFacts:
        """What libvirt finds in the volume's file (after rescanning the pool)."""

        def inspect(conn: libvirt.virConnect) -> VolumeFacts:
            pool = conn.storagePoolLookupByName(pool_name)
            storage.refresh(pool)
            vol = pool.storageVolLookupByName(name)
            root = ET.fromstring(vol.XMLDesc(0))
            fmt = root.find("./target/format")
            return VolumeFacts(
                format=fmt.get("type", "raw") if fmt is not None else "raw",
                capacity=vol.info()[1],
                backing=root.find("./backingStore/path") is not None,
            )

        return self._call(host, inspect, f"volume {name}")

    # -- disks of domains -------------------------------------------------------------
    def attached_targets(self, host: HostRef, uuid: str) -> dict[str, str]:
        """target device -> source path of each disk in the domain's persistent config."""

        def targets(conn: libvirt.virConnect) -> dict[str, str]:
            dom = self._domain(conn, uuid)
            xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
            result = {}
            for disk in ET.fromstring(xml).findall("./devices/disk"):
                target, source = disk.find("target"), disk.find("source")
                if target is not None:
                    path = "" if source is None else source.get("file") or source.get("dev")
                    result[target.get("dev", "")] = path or ""
            return result

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

    def block_resize(self, host: HostRef, uuid: str, target: str, capacity: int) -> None:
        """Grow an attached disk of a running domain: the guest sees the new size."""
        self._call(
            host,
            lambda c: self._domain(c, uuid).blockResize(
                target, capacity, libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES
            ),
            f"disk {target} of domain {uuid}",
        )


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


def _usage(pool: libvirt.virStoragePool) -> PoolUsage:
    _state, capacity, allocation, available = pool.info()
    return PoolUsage(capacity, allocation, available)
