"""What a disk image is, from its first bytes: for uploads streamed straight to a
host, where no ``qemu-img info`` can look at the whole file first.

Only qcow2 and raw are taken. A qcow2 that names a backing file or an external data
file would let the guest read a file of the host, an encrypted one needs a key
Nubis does not have, and a corrupt one is refused; other image formats are named
so the user knows to convert them (``qemu-img convert -O qcow2``). Anything else
is raw: a disk's bytes as they are.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from nubis.images.inspect import ImageRejected

HEAD_BYTES = 4096  # enough for every header looked at here
QCOW2_MAGIC = b"QFI\xfb"
QCOW2_CORRUPT = 1 << 1
QCOW2_EXTERNAL_DATA_FILE = 1 << 2
# header extensions (qcow2 spec, "Header extensions")
QCOW2_EXT_END = 0
QCOW2_EXT_BACKING_FORMAT = 0xE2792ACA
QCOW2_EXT_DATA_FILE = 0x44415441
VDI_SIGNATURE = 0xBEDA107F
OTHER_FORMATS = (
    (b"KDMV", "vmdk"),
    (b"# Disk DescriptorFile", "vmdk"),
    (b"vhdxfile", "vhdx"),
    (b"conectix", "vpc (VHD)"),
    (b"QED\x00", "qed"),
    (b"LUKS\xba\xbe", "luks"),
)


@dataclass(frozen=True)
class HeaderFacts:
    disk_format: str  # qcow2 | raw
    virtual_size: int  # bytes the guest sees


def sniff(head: bytes, total: int) -> HeaderFacts:
    """Facts of an image of ``total`` bytes whose first bytes are ``head``."""
    if total <= 0:
        raise ImageRejected("the image is empty")
    if head.startswith(QCOW2_MAGIC):
        return _qcow2(head)
    for magic, name in OTHER_FORMATS:
        if head.startswith(magic):
            raise ImageRejected(
                f"{name} images are not accepted (qcow2 or raw only): convert it with "
                "qemu-img convert -O qcow2"
            )
    if len(head) >= 0x44 and struct.unpack_from("<I", head, 0x40)[0] == VDI_SIGNATURE:
        raise ImageRejected("vdi images are not accepted (qcow2 or raw only): convert it")
    return HeaderFacts("raw", total)


def _qcow2(head: bytes) -> HeaderFacts:
    if len(head) < 72:
        raise ImageRejected("the qcow2 header is truncated")
    version, backing_offset = struct.unpack_from(">IQ", head, 4)
    size, crypt = struct.unpack_from(">QI", head, 24)
    if version not in (2, 3):
        raise ImageRejected(f"qcow2 version {version} is not supported")
    if backing_offset:
        raise ImageRejected("images with a backing file are refused")
    if crypt:
        raise ImageRejected("encrypted qcow2 images are refused")
    if version == 3:
        if len(head) < 80:
            raise ImageRejected("the qcow2 header is truncated")
        (incompatible,) = struct.unpack_from(">Q", head, 72)
        if incompatible & QCOW2_EXTERNAL_DATA_FILE:
            raise ImageRejected("images with an external data file are refused")
        if incompatible & QCOW2_CORRUPT:
            raise ImageRejected("the qcow2 image is marked corrupt")
    if size <= 0:
        raise ImageRejected("the qcow2 image has no size")
    return HeaderFacts("qcow2", size)


@dataclass(frozen=True)
class Qcow2Layout:
    """What a qcow2 header makes QEMU open besides the file itself."""

    virtual_size: int
    backing_file: str | None  # as written in the header
    backing_format: str | None  # from the backing-format extension (None: QEMU would guess)
    data_file: bool  # an external data file holds the guest's data


def qcow2_layout(head: bytes) -> Qcow2Layout:
    """The references of the qcow2 image whose first bytes are ``head`` (which must
    reach past its header extensions and its backing file name)."""
    if len(head) < 72 or not head.startswith(QCOW2_MAGIC):
        raise ImageRejected("not a qcow2 image")
    version, backing_offset, backing_size = struct.unpack_from(">IQI", head, 4)
    (size,) = struct.unpack_from(">Q", head, 24)
    data_file = False
    extensions_at = 72
    if version >= 3:
        if len(head) < 104:
            raise ImageRejected("the qcow2 header is truncated")
        (incompatible,) = struct.unpack_from(">Q", head, 72)
        (extensions_at,) = struct.unpack_from(">I", head, 100)
        data_file = bool(incompatible & QCOW2_EXTERNAL_DATA_FILE)
    backing_format = None
    at = extensions_at
    while True:
        if at + 8 > len(head):
            raise ImageRejected("the qcow2 header extensions run past what was read")
        kind, length = struct.unpack_from(">II", head, at)
        if kind == QCOW2_EXT_END:
            break
        data = head[at + 8 : at + 8 + length]
        if kind == QCOW2_EXT_BACKING_FORMAT:
            backing_format = data.decode("ascii", "replace")
        elif kind == QCOW2_EXT_DATA_FILE:
            data_file = True
        at += 8 + (length + 7) // 8 * 8
    backing_file = None
    if backing_offset:
        if backing_offset + backing_size > len(head):
            raise ImageRejected("the qcow2 backing file name lies past what was read")
        backing_file = head[backing_offset : backing_offset + backing_size].decode(
            "utf-8", "replace"
        )
    return Qcow2Layout(size, backing_file, backing_format, data_file)
