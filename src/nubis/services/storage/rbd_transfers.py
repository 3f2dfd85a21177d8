"""Uploads into and downloads out of RBD volumes. libvirt's rbd pools stream
nothing, and qemu-img (through librbd) reads and writes files, not HTTP bodies; so
the data passes through a file in the control plane's spool directory, named after
the volume (``<volume id>.upload`` or ``.download``, only root can read it), which
is removed when the transfer ends and by the clean-up of a transfer a crash cut off.

- An upload is spooled, then inspected whole (``qemu-img info`` under limits, as
  image uploads are: no backing file, no external data file, the format the first
  bytes said) and converted into the volume's RBD image (raw).
- A download is the RBD image converted into a qcow2 file (what the guest never
  wrote takes no room), then streamed out.

These objects speak as libvirt's streams do (``streams.VolumeUpload`` and
``VolumeDownload``), so the transfers treat both alike.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from nubis.drivers import rbd_images
from nubis.drivers.libvirt.volumes import PoolSpec
from nubis.images.inspect import ImageRejected, inspect_image
from nubis.services.core.errors import BadRequest

CHUNK = 1024 * 1024


def spool_file(spool: Path, volume_id: str, kind: str) -> Path:
    return spool / f"{volume_id}.{kind}"


def remove_spooled(spool: Path, volume_id: str) -> None:
    for kind in ("upload", "download"):
        spool_file(spool, volume_id, kind).unlink(missing_ok=True)


def _create(path: Path) -> int:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)


class RbdUpload:
    """An upload spooled to ``path``; ``finish`` checks it and hands it to
    ``store(path)``, which writes it into the RBD image."""

    def __init__(self, path: Path, fmt: str, max_size: int, store: Callable[[Path], None]) -> None:
        self.path = path
        self.fmt = fmt
        self.max_size = max_size
        self.store = store
        self.sent = 0
        self.fh = os.fdopen(_create(path), "wb")

    def write(self, data: bytes) -> None:
        self.fh.write(data)
        self.sent += len(data)

    def finish(self) -> None:
        self.fh.close()
        try:
            try:
                facts = inspect_image(self.path)
            except ImageRejected as exc:
                raise BadRequest(str(exc)) from exc
            if facts.disk_format != self.fmt or facts.virtual_size > self.max_size:
                raise BadRequest(
                    f"the upload is a {facts.disk_format} disk of {facts.virtual_size} bytes; "
                    f"its first bytes said {self.fmt}, at most {self.max_size}"
                )
            self.store(self.path)
        finally:
            self.path.unlink(missing_ok=True)

    def abort(self) -> None:
        self.fh.close()
        self.path.unlink(missing_ok=True)


class RbdDownload:
    """The RBD image ``image`` as a qcow2 file at ``path``, read a chunk at a time."""

    def __init__(self, path: Path, spec: PoolSpec, image: str) -> None:
        self.path = path
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # root's alone
        rbd_images.export_file(spec, image, path)
        os.chmod(path, 0o600)
        self.length = path.stat().st_size
        self.received = 0
        self.fh = open(path, "rb")  # noqa: SIM115 - closed by finish or abort

    def read(self) -> bytes:
        data = self.fh.read(CHUNK)
        self.received += len(data)
        return data

    def finish(self) -> None:
        self.abort()

    def abort(self) -> None:
        self.fh.close()
        self.path.unlink(missing_ok=True)
