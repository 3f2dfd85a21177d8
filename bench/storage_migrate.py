"""Live storage migration benchmark: a running guest's 1 GiB disk moved between two
directory pools, through Nubis vs raw libvirt, same run, same guest.

    .venv/bin/python bench/storage_migrate.py [--rounds 4] [--size-gib 1]

One Nubis server on the local libvirtd, two directory pools, one nubis-tiny guest
with two raw volumes of ``--size-gib`` each, filled with data before they are
attached (so every copy moves real bytes). Each round moves one volume with
``POST /volumes/{id}/actions/migrate`` until its task succeeds (the new volume
made, block copy, pivot, the definition updated, the old volume removed), and the
other one the way ``virsh blockcopy --reuse-external --transient-job --wait
--pivot`` does it by hand with the same flags: the target volume made in the
other pool, ``virDomainBlockCopy``, polled until ready, pivoted, and the old
volume deleted. Rounds alternate the pools, and an even count brings the raw
disk back to the file Nubis knows. Prints median wall time of both and the
ratio. Target: ratio <= 1.2.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import libvirt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.server import NubisServer  # noqa: E402

from nubis.drivers.libvirt.volumes import _disk_sources  # noqa: E402

GIB = 1024**3
FLAGS = libvirt.VIR_DOMAIN_BLOCK_COPY_REUSE_EXT | libvirt.VIR_DOMAIN_BLOCK_COPY_TRANSIENT_JOB


def ok(resp) -> dict:  # type: ignore[no-untyped-def]
    if resp.status_code >= 400:
        raise RuntimeError(f"{resp.request.method} {resp.request.url}: {resp.text}")
    return resp.json() if resp.content else {}


def task(srv: NubisServer, resp) -> dict:  # type: ignore[no-untyped-def]
    done = srv.wait_task(ok(resp)["task_id"], timeout=600)
    if done["status"] != "succeeded":
        raise RuntimeError(done["error"])
    return done


def fill(path: str, size: int) -> None:
    step = 256 * 1024 * 1024  # qemu-io takes requests of limited size
    writes = [a for off in range(0, size, step) for a in ("-c", f"write -P 0x5a {off} {step}")]
    subprocess.run(["qemu-io", "-f", "raw", *writes, path], check=True, capture_output=True)


def nubis_move(srv: NubisServer, volume_id: str, pool: str) -> float:
    t0 = time.perf_counter()
    resp = srv.client.post(f"/volumes/{volume_id}/actions/migrate", json={"pool": pool})
    task_id = ok(resp)["task_id"]
    while True:
        state = srv.client.get(f"/tasks/{task_id}").json()
        if state["status"] == "succeeded":
            return time.perf_counter() - t0
        if state["status"] == "failed":
            raise RuntimeError(state["error"])
        time.sleep(0.02)


def raw_move(
    conn: libvirt.virConnect, dom: libvirt.virDomain, target: str, src: str, dst: str, size: int
) -> float:
    """``src`` -> ``dst`` (paths of volumes in the two pools), as virsh blockcopy does."""
    t0 = time.perf_counter()
    pool = conn.storagePoolLookupByTargetPath(os.path.dirname(dst))
    pool.createXML(
        f"<volume><name>{os.path.basename(dst)}</name><capacity>{size}</capacity>"
        "<target><format type='raw'/></target></volume>",
        0,
    )
    dom.blockCopy(
        target,
        f"<disk type='file'><source file='{dst}'/><driver type='raw'/></disk>",
        None,
        FLAGS,
    )
    while True:
        info = dom.blockJobInfo(target, 0)
        if info and info["end"] > 0 and info["cur"] == info["end"]:
            try:
                dom.blockJobAbort(target, libvirt.VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT)
                break
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_BLOCK_COPY_ACTIVE:
                    raise
        time.sleep(0.05)
    while _disk_sources(dom.XMLDesc(0)).get(target) != dst:
        time.sleep(0.01)
    conn.storageVolLookupByPath(src).delete(0)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--size-gib", type=int, default=1)
    args = parser.parse_args()
    rounds = args.rounds + args.rounds % 2  # even: the raw disk ends where it began
    size = args.size_gib * GIB
    dirs = [tempfile.mkdtemp(prefix=f"nubis-bench-sm{i}-", dir="/var/tmp") for i in (0, 1)]
    for d in dirs:
        os.chmod(d, 0o755)
    with tempfile.TemporaryDirectory(prefix="nubis-bench-sm-") as tmp:
        srv = NubisServer(Path(tmp) / "data", NUBIS_RECONCILE_INTERVAL_SECONDS="600").start()
        conn = libvirt.open("qemu:///system")
        iid = None
        volumes: list[str] = []
        try:
            for i, d in enumerate(dirs):
                body = {"name": f"bench-p{i}", "kind": "dir", "path": d, "host": "local"}
                ok(srv.client.post("/storage-pools", json=body))
            resp = srv.client.post(
                "/instances", json={"name": "bench-sm", "image": "nubis-tiny", "flavor": "m1.tiny"}
            )
            iid = ok(resp)["id"]
            task(srv, resp)
            srv.wait_console(iid)
            targets = []
            for name in ("nubis-moved", "raw-moved"):
                body = {"name": name, "size_gib": args.size_gib, "pool": "bench-p0"}
                body["format"] = "raw"
                resp = srv.client.post("/volumes", json=body)
                task(srv, resp)
                vid = ok(resp)["id"]
                volumes.append(vid)
                fill(os.path.join(dirs[0], f"nubis-vol-{vid}.img"), size)
                resp = srv.client.post(f"/instances/{iid}/volumes", json={"volume": vid})
                targets.append(ok(resp)["target"])
                task(srv, resp)
            dom = conn.lookupByUUIDString(iid)
            raw_files = [os.path.join(dirs[0], f"nubis-vol-{volumes[1]}.img")]
            raw_files.append(os.path.join(dirs[1], f"raw-copy-{volumes[1]}.img"))
            nubis_times, raw_times = [], []
            for r in range(rounds):
                nubis_times.append(nubis_move(srv, volumes[0], f"bench-p{1 - r % 2}"))
                src, dst = raw_files[r % 2], raw_files[1 - r % 2]
                raw_times.append(raw_move(conn, dom, targets[1], src, dst, size))
        finally:
            if iid is not None:
                for vid in volumes:
                    resp = srv.client.delete(f"/instances/{iid}/volumes/{vid}")
                    if resp.status_code == 202:
                        srv.wait_task(resp.json()["task_id"])
                resp = srv.client.delete(f"/instances/{iid}")
                if resp.status_code == 202:
                    srv.wait_task(resp.json()["task_id"])
            for vid in volumes:
                resp = srv.client.delete(f"/volumes/{vid}")
                if resp.status_code == 202:
                    srv.wait_task(resp.json()["task_id"])
            for i in (0, 1):
                srv.client.delete(f"/storage-pools/bench-p{i}")
            srv.stop()
            conn.close()
            for d in dirs:
                shutil.rmtree(d, ignore_errors=True)
    nm, rm = statistics.median(nubis_times), statistics.median(raw_times)
    print(
        f"live storage migration of a {args.size_gib} GiB raw disk (filled) of a running "
        f"guest between two directory pools, {rounds} rounds, local libvirtd"
    )
    print(f"  raw libvirt blockcopy : median {rm * 1000:8.1f} ms")
    print(f"  nubis API             : median {nm * 1000:8.1f} ms")
    print(f"  ratio (nubis/raw): median {nm / rm:.2f}x   (target <= 1.2x)")


if __name__ == "__main__":
    main()
