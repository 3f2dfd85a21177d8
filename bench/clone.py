"""Clone benchmark: a linked clone (qcow2 overlay) vs a full copy of a 2 GiB template,
and with ``--rbd`` an RBD clone in Ceph vs a full copy into Ceph, same run.

    .venv/bin/python bench/clone.py [--size-gib 2] [--rounds 3]
    .venv/bin/python bench/clone.py --rbd --size-gib 1     # needs ./setup.sh test's Ceph

Works on the local libvirtd's ``nubis-disks`` pool (``./setup.sh`` makes it) with
the driver calls instance creation uses: ``create_disk`` with a backing file for
a linked clone, ``copy_disk`` (flattening qemu-img convert) for a full one. The
template is filled with data (qemu-io), so the full copy moves real bytes.
Prints median wall time of each and the ratio; a linked clone should be O(1).

``--rbd`` starts a one-node Ceph cluster on 127.0.0.1 (``tests/integration/ceph.py``,
as the tests do), defines an rbd pool on the local libvirtd and times what makes a
root disk there: an RBD clone of the template's base in the pool (``rbd_bases.clone``,
as instance creation does; the first one copies the template into the pool, the
others clone at once), and a full copy into a new RBD image (``qemu-img convert``
through librbd, as Nubis did before clones; each removed after, the OSD is small).
"""

from __future__ import annotations

import argparse
import base64
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import libvirt

from nubis.drivers import rbd_images
from nubis.drivers.libvirt.compute import DISK_POOL, HostRef, LibvirtDriver
from nubis.drivers.libvirt.connection import ConnectionPool
from nubis.drivers.libvirt.volumes import PoolSpec, VolumeDriver
from nubis.services.storage import rbd_bases

GIB = 1024**3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-gib", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rbd", action="store_true", help="also RBD clones in a local Ceph")
    args = parser.parse_args()
    size = args.size_gib * GIB
    conns = ConnectionPool()
    driver = LibvirtDriver(conns, Path("/var/lib/libvirt/nubis/disks"), Path("/tmp"))
    host = HostRef("qemu:///system")
    driver.prepare_host(host)
    raw = libvirt.open(host.uri)
    pool = raw.storagePoolLookupByName(DISK_POOL)
    tag = uuid.uuid4().hex[:8]
    template = f"bench-template-{tag}"
    made: list[str] = []
    try:
        path = Path(driver.create_disk(host, template, size))
        made.append(template)
        # fill the whole template with data, as a real one holds an installed system
        step = 256 * 1024 * 1024  # qemu-io takes requests of limited size
        writes = [a for off in range(0, size, step) for a in ("-c", f"write -P 0x5a {off} {step}")]
        subprocess.run(
            ["qemu-io", "-f", "qcow2", *writes, str(path)],
            check=True,
            capture_output=True,
        )
        pool.refresh(0)
        linked, full = [], []
        for i in range(args.rounds):
            name = f"bench-linked-{tag}-{i}"
            t0 = time.perf_counter()
            driver.create_disk(host, name, size, (str(path), "qcow2"))
            linked.append(time.perf_counter() - t0)
            made.append(name)
            name = f"bench-full-{tag}-{i}"
            t0 = time.perf_counter()
            driver.copy_disk(host, name, str(path), "qcow2", size)
            full.append(time.perf_counter() - t0)
            made.append(name)
        lm, fm = statistics.median(linked) * 1000, statistics.median(full) * 1000
        print(
            f"clone of a {args.size_gib} GiB template (filled), {args.rounds} rounds, "
            "local libvirtd"
        )
        print(f"  linked clone (qcow2 overlay): median {lm:9.1f} ms")
        print(f"  full copy (qemu-img convert): median {fm:9.1f} ms")
        print(f"  ratio full/linked: {fm / lm:.0f}x")
        if args.rbd:
            rbd_rounds(VolumeDriver(conns), host, path, size, args.rounds)
    finally:
        for name in reversed(made):
            driver.delete_volume(host, name)
        raw.close()
        conns.close_all()


def rbd_rounds(driver: VolumeDriver, host: HostRef, template: Path, size: int, rounds: int) -> None:
    """RBD clones vs full copies into Ceph of the template (a qcow2 file), printed."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.integration.ceph import POOL, USER, CephCluster

    with tempfile.TemporaryDirectory(prefix="nubis-bench-ceph-") as tmp:
        ceph = CephCluster(Path(tmp))
        ceph.start()
        pool_id = str(uuid.uuid4())
        address, port = ceph.monitor.rsplit(":", 1)
        spec = PoolSpec(
            f"nubis-bench-{pool_id[:8]}",
            "rbd",
            POOL,
            source_name=POOL,
            monitors=((address, int(port)),),
            auth_user=USER,
            secret_uuid=pool_id,
            secret=base64.b64decode(ceph.user_key),
        )
        try:
            driver.ensure_pool(host, spec)
            pool = rbd_bases.RbdPool(pool_id, host, spec.name, spec)
            source = rbd_bases.BaseSource(pool_id, template, "qcow2", size)
            clones, copies = [], []
            for i in range(rounds + 1):  # the first clone copies the base in
                t0 = time.perf_counter()
                rbd_bases.clone(driver, pool, source, f"bench-clone-{i}", size)
                clones.append(time.perf_counter() - t0)
            for i in range(rounds):
                name = f"bench-copy-{i}"
                t0 = time.perf_counter()
                driver.create_volume(host, spec.name, name, size, "raw", "thin")
                rbd_images.import_file(template, "qcow2", spec, name)
                copies.append(time.perf_counter() - t0)
                driver.delete_volume(host, spec.name, name)
            first, cm = clones[0] * 1000, statistics.median(clones[1:]) * 1000
            fm = statistics.median(copies) * 1000
            print(f"root disk in Ceph RBD (one-node cluster on this machine), {rounds} rounds")
            print(f"  RBD clone (base in the pool):        median {cm:9.1f} ms")
            print(f"  first RBD clone (copies the base):          {first:9.1f} ms")
            print(f"  full copy (qemu-img convert, librbd): median {fm:9.1f} ms")
            print(f"  ratio full copy/RBD clone: {fm / cm:.0f}x")
        finally:
            try:
                driver.remove_pool(host, spec.name)
            finally:
                ceph.stop()


if __name__ == "__main__":
    main()
