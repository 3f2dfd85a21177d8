"""Provisioning benchmark: Nubis API vs raw libvirt-python, in the same run.

    .venv/bin/python bench/provision.py [--n 10]

Nubis: POST /api/v1/instances, then poll the task until it succeeds (the
domain is running). Raw: create a qcow2 linked clone of the same base image
through libvirt's volume API, define the same domain XML, start it. Both
sequential; the figures are the time until the domain runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import libvirt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.server import NubisServer  # noqa: E402

from nubis.drivers.libvirt.domain_xml import DiskSpec, DomainSpec, build_domain_xml  # noqa: E402

GIB = 1024**3


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, round(0.95 * len(ordered)) - 1)]


def nubis_round(srv: NubisServer, name: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    resp = srv.client.post(
        "/instances", json={"name": name, "image": "nubis-tiny", "flavor": "m1.tiny"}
    )
    resp.raise_for_status()
    body = resp.json()
    while True:
        task = srv.client.get(f"/tasks/{body['task_id']}").json()
        if task["status"] == "succeeded":
            return time.perf_counter() - t0, body["id"]
        if task["status"] == "failed":
            raise RuntimeError(task["error"])
        time.sleep(0.02)


def raw_round(conn: libvirt.virConnect, base: str, console_dir: str) -> tuple[float, str]:
    iid = str(uuid.uuid4())
    t0 = time.perf_counter()
    pool = conn.storagePoolLookupByName("nubis-disks")
    vol_xml = (
        f"<volume><name>bench-{iid}</name><capacity unit='bytes'>{GIB}</capacity>"
        "<target><format type='qcow2'/></target><backingStore>"
        f"<path>{base}</path><format type='qcow2'/></backingStore></volume>"
    )
    vol = pool.createXML(vol_xml, 0)
    spec = DomainSpec(
        name=f"bench-{iid}",
        uuid=iid,
        vcpus=1,
        memory_mib=128,
        disks=(DiskSpec(path=vol.path(), boot_order=1),),
        console_log=f"{console_dir}/bench-{iid}.log",
    )
    dom = conn.defineXML(build_domain_xml(spec))
    dom.create()
    return time.perf_counter() - t0, iid


def nubis_delete(srv: NubisServer, iid: str) -> None:
    resp = srv.client.delete(f"/instances/{iid}")
    if resp.status_code == 202:
        srv.wait_task(resp.json()["task_id"])


def raw_cleanup(conn: libvirt.virConnect, iid: str) -> None:
    dom = conn.lookupByUUIDString(iid)
    dom.destroy()
    dom.undefine()
    conn.storagePoolLookupByName("nubis-disks").storageVolLookupByName(f"bench-{iid}").delete(0)
    console = conn.storagePoolLookupByName("nubis-console")
    console.refresh(0)
    try:
        console.storageVolLookupByName(f"bench-{iid}.log").delete(0)
    except libvirt.libvirtError:
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nubis-bench-") as tmp:
        srv = NubisServer(Path(tmp) / "data", NUBIS_RECONCILE_INTERVAL_SECONDS="600").start()
        conn = libvirt.open("qemu:///system")
        made: list[str] = []  # whatever is still to be removed if a round fails
        raw_made: list[str] = []
        try:
            # warm-up (not measured): copies the image to the host pool once
            _, iid = nubis_round(srv, "bench-warmup")
            made.append(iid)
            nubis_delete(srv, made.pop())
            image = srv.client.get("/images/nubis-tiny").json()
            base = (
                conn.storagePoolLookupByName("nubis-disks")
                .storageVolLookupByName(f"image-{image['id']}")
                .path()
            )
            console_dir = "/var/lib/libvirt/nubis/console"
            nubis_times, raw_times = [], []
            # each round is removed before the next (not timed), so every measurement
            # starts on an equally quiet machine: booting TCG guests eat the 2 cores
            for i in range(args.n):
                seconds, iid = nubis_round(srv, f"bench-{i}")
                made.append(iid)
                nubis_times.append(seconds)
                nubis_delete(srv, made.pop())
                seconds, iid = raw_round(conn, base, console_dir)
                raw_made.append(iid)
                raw_times.append(seconds)
                raw_cleanup(conn, raw_made.pop())
        finally:
            for iid in raw_made:
                raw_cleanup(conn, iid)
            for iid in made:
                nubis_delete(srv, iid)
            srv.stop()
            conn.close()
    nm, rm = statistics.median(nubis_times), statistics.median(raw_times)
    print(f"provisioning, N={args.n} sequential, time until the domain runs")
    print(f"  raw libvirt : median {rm * 1000:7.1f} ms   p95 {p95(raw_times) * 1000:7.1f} ms")
    print(f"  nubis API   : median {nm * 1000:7.1f} ms   p95 {p95(nubis_times) * 1000:7.1f} ms")
    print(
        f"  ratio (nubis/raw): median {nm / rm:.2f}x   p95 {p95(nubis_times) / p95(raw_times):.2f}x"
        "   (target <= 1.3x)"
    )


if __name__ == "__main__":
    main()
