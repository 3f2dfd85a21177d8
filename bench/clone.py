"""Clone benchmark: a linked clone (qcow2 overlay) vs a full copy of a 2 GiB template.

    .venv/bin/python bench/clone.py [--size-gib 2] [--rounds 3]

Works on the local libvirtd's ``nubis-disks`` pool (``./setup.sh`` makes it) with
the driver calls instance creation uses: ``create_disk`` with a backing file for
a linked clone, ``copy_disk`` (flattening qemu-img convert) for a full one. The
template is filled with data (qemu-io), so the full copy moves real bytes.
Prints median wall time of each and the ratio; a linked clone should be O(1).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time
import uuid
from pathlib import Path

import libvirt

from nubis.drivers.libvirt.compute import DISK_POOL, HostRef, LibvirtDriver
from nubis.drivers.libvirt.connection import ConnectionPool

GIB = 1024**3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-gib", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
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
            driver.copy_disk(host, name, str(path), size)
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
    finally:
        for name in reversed(made):
            driver.delete_volume(host, name)
        raw.close()
        conns.close_all()


if __name__ == "__main__":
    main()
