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

ACCEPTED = ("qcow2", "raw", "iso")
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


def inspect_image(path: Path) -> ImageFacts:
    proc = subprocess.run(
        ["qemu-img", "info", "--output=json", str(path)], capture_output=True, text=True
    )
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
