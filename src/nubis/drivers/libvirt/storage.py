"""Storage pools and volumes through libvirt's API, so remote hosts work like local ones.

Never let a disk's bytes choose its format. A guest owns every byte of a raw
volume and may write a qcow2 header into it naming any host file as its backing
file; libvirt's pool refresh then calls the file qcow2, and any libvirt call that
uses that guess (a volume copy runs ``qemu-img convert -f qcow2``, a resize runs
``qemu-img resize``) would read the host file or rewrite the guest's data. So every
function here that reads or changes a volume's content is told the format Nubis
recorded, sizes a raw file by its length (never by a header inside it), and reads
a qcow2 file's header itself to refuse references Nubis did not create.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt

from nubis.drivers.errors import NotFound, UnsafeImage
from nubis.drivers.libvirt.connection import translate
from nubis.images.header import Qcow2Layout, qcow2_layout
from nubis.images.inspect import ImageRejected

CHUNK = 1024 * 1024
# a raw source is copied through a qcow2 file that names it as its raw backing file:
# qemu-img then reads it as raw, whatever its first bytes say
VIEW_SUFFIX = ".raw-view"
QCOW2_HEAD = 64 * 1024  # a qcow2 file's header, extensions and backing file name
FORMATS = ("raw", "qcow2")


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


def file_size(vol: libvirt.virStorageVol) -> int:
    """The length of the volume's file (or block device): a raw disk's size, whatever
    a header written inside it claims."""
    return vol.infoFlags(libvirt.VIR_STORAGE_VOL_GET_PHYSICAL)[2]


def read_range(
    conn: libvirt.virConnect, vol: libvirt.virStorageVol, offset: int, length: int
) -> bytes:
    """``length`` bytes of the volume's file from ``offset``, through a libvirt stream."""
    if length <= 0:
        return b""
    stream = conn.newStream(0)
    vol.download(stream, offset, length, 0)
    chunks: list[bytes] = []
    stream.recvAll(lambda _st, data, acc: acc.append(data) or 0, chunks)
    stream.finish()
    return b"".join(chunks)


def check_qcow2(
    conn: libvirt.virConnect,
    vol: libvirt.virStorageVol,
    backing: tuple[str, str] | None = None,
) -> Qcow2Layout:
    """The layout of a volume recorded as qcow2, read from its own header. Refused
    (UnsafeImage): an external data file, or a backing file other than ``backing``
    (path, format), the one Nubis gave it (a linked clone's image)."""
    head = read_range(conn, vol, 0, min(QCOW2_HEAD, file_size(vol)))
    try:
        layout = qcow2_layout(head)
    except ImageRejected as exc:
        raise UnsafeImage(f"{vol.name()} is recorded as qcow2 but {exc}") from exc
    if layout.data_file:
        raise UnsafeImage(f"{vol.name()} names an external data file: refused")
    found = layout.backing_file
    if found is not None and (found, layout.backing_format) != backing:
        raise UnsafeImage(
            f"{vol.name()} names a backing file Nubis did not give it ({found!r}, format "
            f"{layout.backing_format!r}): refused"
        )
    return layout


def copy_from(
    conn: libvirt.virConnect,
    pool: libvirt.virStoragePool,
    name: str,
    source_path: str,
    source_format: str,
    fmt: str,
    capacity: int = 0,
    backing: tuple[str, str] | None = None,
) -> str:
    """A full, independent copy (``fmt``) of the volume at ``source_path`` as the pool's
    volume ``name``, the source read as ``source_format`` (the recorded one): a raw
    source through a qcow2 view of it, a qcow2 one only once its header names nothing
    but ``backing`` (see ``check_qcow2``); its backing chain flattened by qemu-img
    convert, at least ``capacity`` bytes. A partial copy an interrupted run left is
    replaced. Returns the copy's path."""
    if source_format not in FORMATS or fmt not in FORMATS:
        raise UnsafeImage(f"cannot copy a {source_format} disk into {fmt}")
    view_name = name + VIEW_SUFFIX
    delete_volume(pool, name)  # and its view
    source = conn.storageVolLookupByPath(source_path)
    if source_format == "raw":
        size = file_size(source)
        reader = pool.createXML(volume_xml(view_name, size, "qcow2", (source_path, "raw")), 0)
    else:
        size = check_qcow2(conn, source, backing).virtual_size
        reader = source
    try:
        vol = pool.createXMLFrom(volume_xml(name, max(size, capacity), fmt), reader, 0)
    finally:
        if reader is not source:
            reader.delete(0)
    grow(conn, vol, max(size, capacity), fmt)
    return vol.path()


def grow(conn: libvirt.virConnect, vol: libvirt.virStorageVol, capacity: int, fmt: str) -> None:
    """Grow the volume to ``capacity`` bytes as the disk format ``fmt`` it is recorded
    as (never shrinks). A raw file is lengthened by writing its last byte (libvirt's
    resize would run qemu-img resize on whatever format it guessed); a raw block
    device and a qcow2 file go through libvirt's resize."""
    if fmt == "raw":
        if file_size(vol) >= capacity:
            return
        if vol.info()[0] == libvirt.VIR_STORAGE_VOL_FILE:
            stream = conn.newStream(0)
            vol.upload(stream, capacity - 1, 1, 0)
            stream.send(b"\0")
            stream.finish()
            return
    elif vol.info()[1] > capacity:
        # a qcow2 file Nubis made: libvirt reads it right, but what it holds may be
        # stale (a file just uploaded over, re-read by a pool refresh that libvirt runs
        # later, in a thread of its own); asked for the capacity it believes the file
        # has already, it still runs qemu-img resize, which grows the real file
        return
    try:
        vol.resize(capacity, 0)
    except libvirt.libvirtError as exc:
        # a qcow2 file written in full holds more than its capacity (its metadata):
        # libvirt refuses a resize to the capacity it has already
        shrink = "shrink capacity below existing allocation" in (exc.get_error_message() or "")
        if not (shrink and vol.info()[1] == capacity):
            raise


def grow_volume(
    conn: libvirt.virConnect, pool: libvirt.virStoragePool, name: str, capacity: int, fmt: str
) -> None:
    """Grow the pool's volume ``name`` (recorded as ``fmt``) to ``capacity`` bytes. A
    qcow2 volume is looked up after a pool refresh: a file just uploaded over was
    made raw, and until libvirt's own refresh after the upload has run, its resize
    would lengthen the file as raw instead of growing the qcow2 disk."""
    if fmt == "qcow2":
        refresh(pool)
    vol = find_volume(pool, name)
    if vol is None:
        raise NotFound(f"volume {name}")
    grow(conn, vol, capacity, fmt)


def delete_volume(pool: libvirt.virStoragePool, name: str, flags: int = 0) -> bool:
    """Delete the volume if it exists (and a raw view of a copy into it that a dead
    process left behind); ``flags`` are libvirt's (e.g. its RBD snapshots too)."""
    try:
        pool.storageVolLookupByName(name + VIEW_SUFFIX).delete(0)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
            raise translate(exc) from exc
    vol = find_volume(pool, name)
    if vol is None:
        return False
    vol.delete(flags)
    return True


def read_tail(
    conn: libvirt.virConnect, pool: libvirt.virStoragePool, name: str, max_bytes: int
) -> bytes:
    """The last ``max_bytes`` of a volume, downloaded through a libvirt stream."""
    vol = find_volume(pool, name)
    if vol is None:
        raise NotFound(f"volume {name}")
    # the file grows behind libvirt's back, and its length is read afresh; its first
    # bytes are the guest's output, so it is never sized by what they claim to be
    size = file_size(vol)
    offset = max(0, size - max_bytes)
    return read_range(conn, vol, offset, size - offset)
