"""Ceph RBD snapshots, and copies out of them, made by qemu-img through its rbd driver
(librbd) on the control plane: libvirt's rbd pools have neither snapshots nor a way
to read an image's snapshot.

An RBD snapshot is Ceph's own: instantaneous (copy-on-write inside Ceph) and
crash-consistent when taken under a running guest, as the image's writes are
ordered. The cephx key reaches qemu-img in a file only its owner can read, never on
a command line (``ps`` shows command lines to every user).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from nubis import blocking
from nubis.drivers.errors import DriverError
from nubis.drivers.libvirt.volumes import PoolSpec

SECRET_ID = "nubis-rbd-key"
# an image's copy in an RBD pool, the base its RBD clones are made from; named after
# the pool too, as two pools (of two installations) may use one Ceph pool
BASE_PREFIX = "nubis-base-"
BASE_SNAPSHOT = "base"  # taken once the copy is whole: a base without it is partial
TIMEOUT = 3600.0  # a copy of a large image takes a while; a snapshot takes a moment


class RbdError(DriverError):
    pass


def base_prefix(pool_id: str) -> str:
    return f"{BASE_PREFIX}{pool_id}-"


def base_name(pool_id: str, image_id: str) -> str:
    return f"{base_prefix(pool_id)}{image_id}.img"


def image_opts(spec: PoolSpec, image: str, snapshot: str | None = None) -> str:
    """qemu-img's ``--image-opts`` for an image (at a snapshot) of the pool. Names are
    made by Nubis (``nubis-vol-<id>...``, ``nubis-vsnap-<id>``): no commas to escape."""
    if spec.type != "rbd" or not spec.source_name or not spec.auth_user:
        raise RbdError(f"pool {spec.name} is not a Ceph RBD pool with a cephx user")
    for name in (image, snapshot or ""):
        if "," in name or "@" in name:
            raise RbdError(f"{name!r} is not an RBD image or snapshot name Nubis makes")
    opts = [
        "driver=rbd",
        f"pool={spec.source_name}",
        f"image={image}",
        f"user={spec.auth_user}",
        f"key-secret={SECRET_ID}",
    ]
    for i, (host, port) in enumerate(spec.monitors):
        opts += [f"server.{i}.host={host}", f"server.{i}.port={port}"]
    if snapshot is not None:
        opts.append(f"snapshot={snapshot}")
    return ",".join(opts)


@contextmanager
def _key_file(spec: PoolSpec) -> Iterator[str]:
    if not spec.secret:
        raise RbdError(f"pool {spec.name} has no cephx key")
    fd, path = tempfile.mkstemp(prefix="nubis-rbd-")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(spec.secret)
        yield path
    finally:
        os.unlink(path)


def _qemu_img(spec: PoolSpec, command: str, *args: str) -> str:
    """Run ``qemu-img command`` with the pool's key as a secret object; its output."""
    blocking.check("qemu-img on an RBD image")
    with _key_file(spec) as key:
        cmd = ["qemu-img", command, "--object", f"secret,id={SECRET_ID},file={key}", *args]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            raise RbdError(f"qemu-img {command} took longer than {TIMEOUT:.0f} s") from None
    if proc.returncode != 0:
        raise RbdError(f"qemu-img {command}: {proc.stderr.strip() or proc.returncode}")
    return proc.stdout


def snapshot_create(spec: PoolSpec, image: str, snapshot: str) -> None:
    _qemu_img(spec, "snapshot", "-c", snapshot, "--image-opts", image_opts(spec, image))


def snapshot_revert(spec: PoolSpec, image: str, snapshot: str) -> None:
    """The image's data (and size) back to the snapshot's; no guest may use it."""
    _qemu_img(spec, "snapshot", "-a", snapshot, "--image-opts", image_opts(spec, image))


def snapshot_delete(spec: PoolSpec, image: str, snapshot: str) -> None:
    _qemu_img(spec, "snapshot", "-d", snapshot, "--image-opts", image_opts(spec, image))


def snapshots(spec: PoolSpec, image: str) -> list[str]:
    """The names of the image's snapshots."""
    out = _qemu_img(spec, "snapshot", "-l", "--image-opts", image_opts(spec, image))
    rows = [line.split() for line in out.splitlines()[2:]]  # a title, a header first
    return [row[1] for row in rows if len(row) > 1]


def copy_snapshot(spec: PoolSpec, image: str, snapshot: str, target: PoolSpec, into: str) -> None:
    """The data of ``image@snapshot`` written into the existing image ``into`` of the
    ``target`` pool (made by libvirt beforehand, at least as large)."""
    if target.secret != spec.secret or target.auth_user != spec.auth_user:
        raise RbdError("a snapshot is copied within its own Ceph pool only")
    _qemu_img(
        spec,
        "convert",
        "-n",
        "--image-opts",
        image_opts(spec, image, snapshot),
        "--target-image-opts",
        image_opts(target, into),
    )


def import_file(path: Path, fmt: str, target: PoolSpec, into: str) -> None:
    """A local disk image file (read as ``fmt``, the format it was inspected as) written
    into the existing image ``into`` of the pool (made by libvirt beforehand, at least
    as large as the file's disk)."""
    if fmt not in ("qcow2", "raw"):
        raise RbdError(f"cannot import a {fmt} file")
    _qemu_img(
        target,
        "convert",
        "-n",
        "-f",
        fmt,
        str(path),
        "--target-image-opts",
        image_opts(target, into),
    )


def export_file(spec: PoolSpec, image: str, path: Path) -> None:
    """The image's data written into a new qcow2 file at ``path`` (only what is
    allocated takes room: a download of a mostly empty disk stays small)."""
    _qemu_img(spec, "convert", "--image-opts", image_opts(spec, image), "-O", "qcow2", str(path))
