"""Storage pools and volumes through libvirt's API, so remote hosts work like local ones."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt

from nubis.drivers.errors import NotFound
from nubis.drivers.libvirt.connection import translate

CHUNK = 1024 * 1024


def _pool_xml(name: str, path: Path) -> str:
    pool = ET.Element("pool", type="dir")
    ET.SubElement(pool, "name").text = name
    target = ET.SubElement(pool, "target")
    ET.SubElement(target, "path").text = str(path)
    return ET.tostring(pool, encoding="unicode")


def ensure_pool(conn: libvirt.virConnect, name: str, path: Path) -> libvirt.virStoragePool:
    """A started, autostarted dir pool ``name`` at ``path`` (created when missing)."""
    try:
        pool = conn.storagePoolLookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_POOL:
            raise translate(exc) from exc
        pool = conn.storagePoolDefineXML(_pool_xml(name, path), 0)
        pool.build(0)
        pool.setAutostart(1)
    if not pool.isActive():
        try:
            pool.create(0)
        except libvirt.libvirtError:
            if not pool.isActive():  # else another control plane started it meanwhile
                pool.build(0)  # the directory went away: make it again
                pool.create(0)
    return pool


def refresh(pool: libvirt.virStoragePool, timeout: float = 120) -> None:
    """Rescan the pool; libvirt refuses while an upload/download stream runs on it,
    so wait for that to end (an image copy takes seconds to minutes)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            pool.refresh(0)
            return
        except libvirt.libvirtError as exc:
            busy = "asynchronous jobs running" in (exc.get_error_message() or "")
            if not busy or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def find_volume(pool: libvirt.virStoragePool, name: str) -> libvirt.virStorageVol | None:
    try:
        return pool.storageVolLookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
            raise translate(exc) from exc
    refresh(pool)  # a file added behind this libvirtd's back (virtlogd, another host)
    try:
        return pool.storageVolLookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
            raise translate(exc) from exc
    return None


def volume_xml(
    name: str,
    capacity: int,
    fmt: str,
    backing: tuple[str, str] | None = None,
    allocation: int | None = None,
) -> str:
    """A volume description: ``allocation`` bytes reserved up front (default: none
    for a raw file, libvirt's choice otherwise), on ``backing`` (path, format) if given."""
    vol = ET.Element("volume")
    ET.SubElement(vol, "name").text = name
    ET.SubElement(vol, "capacity", unit="bytes").text = str(capacity)
    if allocation is None and backing is None and fmt == "raw":
        allocation = 0
    if allocation is not None:
        ET.SubElement(vol, "allocation", unit="bytes").text = str(allocation)
    target = ET.SubElement(vol, "target")
    ET.SubElement(target, "format", type=fmt)
    if backing is not None:
        store = ET.SubElement(vol, "backingStore")
        ET.SubElement(store, "path").text = backing[0]
        ET.SubElement(store, "format", type=backing[1])
    return ET.tostring(vol, encoding="unicode")


def upload_file(
    conn: libvirt.virConnect, pool: libvirt.virStoragePool, name: str, source: Path
) -> str:
    """Copy a local file byte for byte into a new volume (through a libvirt stream)."""
    size = source.stat().st_size
    vol = pool.createXML(volume_xml(name, size, "raw"), 0)
    try:
        stream = conn.newStream(0)
        vol.upload(stream, 0, size, 0)
        with open(source, "rb") as fh:
            stream.sendAll(lambda _st, nbytes, f: f.read(min(nbytes, CHUNK)), fh)
        stream.finish()
    except BaseException:
        vol.delete(0)
        raise
    return vol.path()


def create_empty(pool: libvirt.virStoragePool, name: str) -> None:
    pool.createXML(volume_xml(name, 0, "raw"), 0)


def create_blank(pool: libvirt.virStoragePool, name: str, capacity: int) -> str:
    """A new, empty (sparse) qcow2 disk; returns its path."""
    return pool.createXML(volume_xml(name, capacity, "qcow2"), 0).path()


def create_overlay(
    pool: libvirt.virStoragePool, name: str, backing_path: str, backing_fmt: str, capacity: int
) -> str:
    """A qcow2 linked clone of ``backing_path``; returns the new volume's path."""
    return pool.createXML(
        volume_xml(name, capacity, "qcow2", (backing_path, backing_fmt)), 0
    ).path()


def copy_from(
    conn: libvirt.virConnect,
    pool: libvirt.virStoragePool,
    name: str,
    source_path: str,
    fmt: str,
    capacity: int = 0,
) -> str:
    """A full, independent copy (``fmt``) of the volume at ``source_path`` as the pool's
    volume ``name``: its backing chain flattened by qemu-img convert, at least
    ``capacity`` bytes. A partial copy an interrupted run left is replaced. Returns
    the copy's path."""
    delete_volume(pool, name)
    source = conn.storageVolLookupByPath(source_path)
    size = max(capacity, source.info()[1])
    vol = pool.createXMLFrom(volume_xml(name, size, fmt), source, 0)
    if vol.info()[1] < size:
        vol.resize(size, 0)
    return vol.path()


def grow_volume(pool: libvirt.virStoragePool, name: str, capacity: int) -> None:
    """Grow the pool's volume ``name`` to ``capacity`` bytes (never shrinks it)."""
    vol = find_volume(pool, name)
    if vol is None:
        raise NotFound(f"volume {name}")
    if vol.info()[1] < capacity:
        vol.resize(capacity, 0)


def delete_volume(pool: libvirt.virStoragePool, name: str) -> bool:
    vol = find_volume(pool, name)
    if vol is None:
        return False
    vol.delete(0)
    return True


def read_tail(
    conn: libvirt.virConnect, pool: libvirt.virStoragePool, name: str, max_bytes: int
) -> bytes:
    """The last ``max_bytes`` of a volume, downloaded through a libvirt stream."""
    vol = find_volume(pool, name)
    if vol is None:
        raise NotFound(f"volume {name}")
    refresh(pool)  # the file grows behind libvirt's back
    vol = pool.storageVolLookupByName(name)
    size = vol.info()[1]
    offset = max(0, size - max_bytes)
    length = size - offset
    if length == 0:
        return b""
    stream = conn.newStream(0)
    vol.download(stream, offset, length, 0)
    chunks: list[bytes] = []
    stream.recvAll(lambda _st, data, acc: acc.append(data) or 0, chunks)
    stream.finish()
    return b"".join(chunks)
