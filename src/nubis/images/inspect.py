"""What an image file really is, by ``qemu-img info``; refuses the dangerous kinds.

A qcow2 may name a backing file or an external data file: booting it would let
a guest read any file of the host. Such images are refused, and so is any
format other than qcow2, raw and ISO.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from nubis import blocking

ACCEPTED = ("qcow2", "raw", "iso")
QEMU_IMG_ADDRESS_SPACE = 1024**3  # bytes
QEMU_IMG_CPU_SECONDS = 30
QEMU_IMG_TIMEOUT = 60  # seconds of wall-clock time
ISO_MAGIC_OFFSET = 0x8001


class ImageRejected(ValueError):
    pass


@dataclass(frozen=True)
class ImageFacts:
    disk_format: str  # qcow2 | raw | iso
    virtual_size: int
    size: int


def _is_iso(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(ISO_MAGIC_OFFSET)
        return fh.read(5) == b"CD001"


def inspect_image(path: Path, fmt: str | None = None) -> ImageFacts:
    """What the file at ``path`` is. ``fmt``: the format Nubis made it in (a template's
    flattened copy), read as that; None (an upload): qemu-img finds it. qemu-img runs
    under memory, CPU and time limits, because a crafted image can make it take
    unbounded amounts of both (the issue OpenStack's OSSA-2015-014 fixed this way)."""
    blocking.check("qemu-img info")
    cmd = [
        "prlimit",
        f"--as={QEMU_IMG_ADDRESS_SPACE}",
        f"--cpu={QEMU_IMG_CPU_SECONDS}",
        "--",
        "qemu-img",
        "info",
        "--output=json",
    ]
    if fmt is not None:
        cmd += ["-f", "raw" if fmt == "iso" else fmt]
    try:
        proc = subprocess.run(
            [*cmd, str(path)], capture_output=True, text=True, timeout=QEMU_IMG_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        raise ImageRejected(
            f"reading the image took longer than {QEMU_IMG_TIMEOUT} s: refused"
        ) from None
    if proc.returncode < 0:
        raise ImageRejected("reading the image took more memory or CPU than allowed: refused")
    if proc.returncode != 0:
        raise ImageRejected(f"not a readable disk image: {proc.stderr.strip()}")
    info = json.loads(proc.stdout)
    fmt = info.get("format")
    if info.get("backing-filename") or info.get("full-backing-filename"):
        raise ImageRejected("images with a backing file are refused")
    specific = (info.get("format-specific") or {}).get("data") or {}
    if specific.get("data-file"):
        raise ImageRejected("images with an external data file are refused")
    if fmt == "raw" and _is_iso(path):
        fmt = "iso"
    if fmt not in ACCEPTED:
        raise ImageRejected(f"image format {fmt!r} is not accepted (qcow2, raw or iso only)")
    if specific.get("corrupt"):
        raise ImageRejected("the qcow2 image is marked corrupt")
    return ImageFacts(
        disk_format=fmt, virtual_size=int(info["virtual-size"]), size=path.stat().st_size
    )
