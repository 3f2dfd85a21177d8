"""Ceph RBD snapshots, and copies out of them, made by qemu-img through its rbd driver
(librbd) on the control plane: libvirt's rbd pools have neither snapshots nor a way
to read an image's snapshot. Clones of a snapshot are made by Ceph's own ``rbd`` tool
(Debian's ``ceph-common``, needed on the control plane for that only): neither
libvirt (it clones an image's latest state) nor qemu-img makes them.

An RBD snapshot is Ceph's own: instantaneous (copy-on-write inside Ceph) and
crash-consistent when taken under a running guest, as the image's writes are
ordered. The cephx key reaches qemu-img in a file only its owner can read, never on
a command line (``ps`` shows command lines to every user).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
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
def _key_file(spec: PoolSpec, encoded: bool = False) -> Iterator[str]:
    """A file holding the pool's key: its bytes (qemu's secret), or ``encoded`` in
    base64 as Ceph's keyfiles are."""
    if not spec.secret:
        raise RbdError(f"pool {spec.name} has no cephx key")
    fd, path = tempfile.mkstemp(prefix="nubis-rbd-")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(base64.b64encode(spec.secret) if encoded else spec.secret)
        yield path
    finally:
        os.unlink(path)


def _qemu_img(spec: PoolSpec, command: str, *args: str) -> str:
    """Run ``qemu-img command`` with the pool's key as a secret object; its output."""
    blocking.check("qemu-img on an RBD image")
    with _key_file(spec) as key:
        cmd = ["qemu-img", command, "--object", f"secret,id={SECRET_ID},file={key}", *args]
        return _run(cmd, f"qemu-img {command}")


def _run(cmd: list[str], what: str) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        raise RbdError(f"{what} took longer than {TIMEOUT:.0f} s") from None
    if proc.returncode != 0:
        # Ceph's messenger logs to stderr as it falls back between protocols: the last
        # line is the tool's own error
        lines = proc.stderr.strip().splitlines()
        raise RbdError(f"{what}: {lines[-1] if lines else proc.returncode}")
    return proc.stdout


def has_tool() -> bool:
    """Whether Ceph's ``rbd`` tool, which makes clones of snapshots, is installed."""
    return shutil.which("rbd") is not None


def _rbd(spec: PoolSpec, *args: str) -> str:
    """Run Ceph's ``rbd`` tool as the pool's cephx user (images named ``pool/image``);
    its output. No Ceph configuration file is read: the monitors and the key are the
    pool's."""
    if spec.type != "rbd" or not spec.source_name or not spec.auth_user:
        raise RbdError(f"pool {spec.name} is not a Ceph RBD pool with a cephx user")
    if not has_tool():
        raise RbdError(
            "Ceph's rbd tool is not installed on the control plane (Debian's ceph-common): "
            "it makes the clones of RBD snapshots"
        )
    blocking.check("rbd on an RBD image")
    monitors = ",".join(
        f"[{host}]:{port}" if ":" in host else f"{host}:{port}" for host, port in spec.monitors
    )
    with _key_file(spec, encoded=True) as key:
        cmd = ["rbd", "--conf", "/dev/null", "--mon-host", monitors, "--id", spec.auth_user]
        return _run([*cmd, "--keyfile", key, *args], f"rbd {args[0]}")


def _spec_name(spec: PoolSpec, image: str, snapshot: str | None = None) -> str:
    """``pool/image[@snapshot]``, as Ceph's tool names them."""
    return f"{spec.source_name}/{image}" + (f"@{snapshot}" if snapshot else "")


def clone_snapshot(spec: PoolSpec, image: str, snapshot: str, into: str, capacity: int) -> None:
    """``into``: an RBD clone of ``image@snapshot`` in the same pool, of ``capacity``
    bytes (at least the snapshot's size). The snapshot is protected first, as Ceph
    clones protected snapshots only; a clone an interrupted run left is replaced."""
    source, target = _spec_name(spec, image, snapshot), _spec_name(spec, into)
    info = json.loads(_rbd(spec, "info", "--format", "json", source))
    if info.get("protected") != "true":
        _rbd(spec, "snap", "protect", source)
    if into in json.loads(_rbd(spec, "ls", "--format", "json", str(spec.source_name)) or "[]"):
        _rbd(spec, "rm", "--no-progress", target)
    _rbd(spec, "clone", source, target)
    if capacity > int(info["size"]):
        _rbd(spec, "resize", "--no-progress", "--size", f"{capacity}B", target)


def unprotect(spec: PoolSpec, image: str, snapshot: str) -> None:
    """Let a snapshot that has no clones left be deleted (nothing to do if it is not
    protected). Without Ceph's tool no clone was made: nothing protected it."""
    if not has_tool():
        return
    name = _spec_name(spec, image, snapshot)
    if json.loads(_rbd(spec, "info", "--format", "json", name)).get("protected") == "true":
        _rbd(spec, "snap", "unprotect", name)


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
