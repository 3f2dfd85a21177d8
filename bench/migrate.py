"""Live-migration benchmark: through Nubis vs raw libvirt, same run, same kind of guest.

    .venv/bin/python bench/migrate.py [--rounds 6]

A 2-host devcluster; one nubis-tiny guest managed by Nubis and a twin defined
directly with libvirt (same domain XML shape, linked clone on the same shared
storage). Each round migrates each guest to the other host: Nubis through
POST /instances/{id}/actions/migrate until the task succeeds; raw with
virDomainMigrate3 and the same flags (live, persist on target, undefine on
source, unsafe as the devcluster's bind-mounted storage needs). Prints median
and p95 wall time of both and the ratio. Target: ratio <= 1.2.
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

from nubis.devcluster.hosts import DevCluster  # noqa: E402
from nubis.drivers.libvirt.domain_xml import DiskSpec, DomainSpec, build_domain_xml  # noqa: E402

FLAGS = (
    libvirt.VIR_MIGRATE_LIVE
    | libvirt.VIR_MIGRATE_PERSIST_DEST
    | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
    | libvirt.VIR_MIGRATE_UNSAFE
)


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, round(0.95 * len(ordered)) - 1)]


def nubis_migrate(srv: NubisServer, iid: str) -> float:
    t0 = time.perf_counter()
    resp = srv.client.post(f"/instances/{iid}/actions/migrate", json={})
    resp.raise_for_status()
    task_id = resp.json()["task_id"]
    while True:
        task = srv.client.get(f"/tasks/{task_id}").json()
        if task["status"] == "succeeded":
            return time.perf_counter() - t0
        if task["status"] == "failed":
            raise RuntimeError(task["error"])
        time.sleep(0.02)


def raw_migrate(conns: dict[str, libvirt.virConnect], uuid_: str, src: str, dst: str) -> float:
    t0 = time.perf_counter()
    dom = conns[src].lookupByUUIDString(uuid_)
    dom.migrate3(conns[dst], {libvirt.VIR_MIGRATE_PARAM_URI: f"tcp://{dst}"}, FLAGS)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nubis-bench-mig-") as tmp:
        cluster = DevCluster(Path(tmp) / "dc")
        hosts = cluster.up(2)
        addrs = [h.address for h in hosts]
        srv = NubisServer(Path(tmp) / "data", NUBIS_RECONCILE_INTERVAL_SECONDS="600").start()
        conns = {a: libvirt.open(f"qemu+tcp://{a}/system") for a in addrs}
        raw_id = str(uuid.uuid4())
        iid = None
        try:
            srv.client.post("/clusters", json={"name": "b", "trust_shared_storage": True})
            for h in hosts:
                srv.client.post("/hosts", json={"name": h.name, "uri": h.uri, "cluster": "b"})
            resp = srv.client.post(
                "/instances",
                json={"name": "bench", "image": "nubis-tiny", "flavor": "m1.tiny", "host": "dev-1"},
            )
            iid = resp.json()["id"]
            assert srv.wait_task(resp.json()["task_id"])["status"] == "succeeded"
            # the raw twin: a linked clone of the same image copy, same XML shape
            image_id = srv.client.get("/images/nubis-tiny").json()["id"]
            pool = conns[addrs[0]].storagePoolLookupByName("nubis-disks")
            base = pool.storageVolLookupByName(f"image-{image_id}").path()
            vol = pool.createXML(
                f"<volume><name>bench-{raw_id}</name><capacity unit='G'>1</capacity>"
                "<target><format type='qcow2'/></target><backingStore>"
                f"<path>{base}</path><format type='qcow2'/></backingStore></volume>",
                0,
            )
            spec = DomainSpec(
                name=f"bench-{raw_id}",
                uuid=raw_id,
                vcpus=1,
                memory_mib=128,
                disks=(DiskSpec(path=vol.path(), boot_order=1),),
                console_log=f"/var/lib/libvirt/nubis/console/bench-{raw_id}.log",
            )
            conns[addrs[0]].defineXML(build_domain_xml(spec)).create()
            srv.wait_console(iid)
            time.sleep(5)  # let both guests finish booting: migrate idle guests
            nubis_times, raw_times = [], []
            where = 0
            for _ in range(args.rounds):
                nubis_times.append(nubis_migrate(srv, iid))
                raw_times.append(raw_migrate(conns, raw_id, addrs[where], addrs[1 - where]))
                where = 1 - where
        finally:
            for a in addrs:
                try:
                    dom = conns[a].lookupByUUIDString(raw_id)
                    dom.destroy()
                    dom.undefine()
                except libvirt.libvirtError:
                    pass
            try:
                conns[addrs[0]].storagePoolLookupByName("nubis-disks").storageVolLookupByName(
                    f"bench-{raw_id}"
                ).delete(0)
            except libvirt.libvirtError:
                pass
            if iid is not None:
                resp = srv.client.delete(f"/instances/{iid}")
                if resp.status_code == 202:
                    srv.wait_task(resp.json()["task_id"])
            srv.stop()
            for c in conns.values():
                c.close()
            cluster.down(purge=True)
    nm, rm = statistics.median(nubis_times), statistics.median(raw_times)
    print(f"live migration of an idle 128 MiB guest, {args.rounds} rounds, 2-host devcluster")
    print(f"  raw libvirt : median {rm * 1000:7.1f} ms   p95 {p95(raw_times) * 1000:7.1f} ms")
    print(f"  nubis API   : median {nm * 1000:7.1f} ms   p95 {p95(nubis_times) * 1000:7.1f} ms")
    print(f"  ratio (nubis/raw): median {nm / rm:.2f}x   (target <= 1.2x)")


if __name__ == "__main__":
    main()
