"""Host-failure benchmark: how long until the HA instances of a killed host run again.

    .venv/bin/python bench/failover.py [--rounds 3] [--vms 2] [--down-after 20]

A 3-host devcluster registered by `register_hosts` (lockspace + devcluster fencing),
a server with NUBIS_HOST_DOWN_AFTER_SECONDS=--down-after. Each round boots --vms HA
instances on one host, kills that host (every process of it, as a power cut), and
measures from the kill: detection (host no longer up), fencing (host down), and the
restart of the last HA instance elsewhere; then the host is booted again. Baseline,
same run: creating the same number of instances on a healthy host (the restart
cannot be faster than a boot). Prints median and max of each and the overhead of
the failover over the boot beyond the configured down-after. Target: restart < 60 s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.server import NubisServer  # noqa: E402

from nubis.devcluster.chaos import CLUSTER, register_hosts  # noqa: E402
from nubis.devcluster.hosts import DevCluster  # noqa: E402


def until(check, timeout: float = 180) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(0.1)
    raise RuntimeError("timed out")


def boot(srv: NubisServer, names: list[str], host: str) -> tuple[list[str], float]:
    start = time.monotonic()
    made = []
    for name in names:
        body = {"name": name, "image": "nubis-tiny", "flavor": "m1.tiny", "host": host}
        resp = srv.client.post("/instances", json={**body, "cluster": CLUSTER, "ha": True})
        resp.raise_for_status()
        made.append(resp.json())
    for inst in made:
        if srv.wait_task(inst["task_id"])["status"] != "succeeded":
            raise RuntimeError(f"{inst['name']} did not start")
    return [i["id"] for i in made], time.monotonic() - start


def delete(srv: NubisServer, ids: list[str]) -> None:
    tasks = []
    for iid in ids:
        resp = srv.client.delete(f"/instances/{iid}")
        if resp.status_code != 202:
            raise RuntimeError(f"cannot delete {iid}: {resp.text}")
        tasks.append(resp.json()["task_id"])
    for task_id in tasks:
        srv.wait_task(task_id)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--vms", type=int, default=2)
    parser.add_argument("--down-after", type=float, default=20.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="nubis-bench-failover-"))
    cluster = DevCluster(work / "devcluster")
    cluster.up(3)
    srv = NubisServer(
        work / "data",
        NUBIS_HOST_DOWN_AFTER_SECONDS=str(args.down_after),
        NUBIS_HA_CHECK_INTERVAL_SECONDS="1",
        NUBIS_REGISTER_LOCAL_HOST="false",
        NUBIS_RECONCILE_INTERVAL_SECONDS="10",
    )
    figures: dict[str, list[float]] = {"boot": [], "detect": [], "fence": [], "restart": []}
    try:
        srv.start()
        register_hosts(srv.client, cluster)
        for r in range(args.rounds):
            victim = cluster.host(f"dev-{1 + r % 3}")
            names = [f"b{r}-{i}" for i in range(args.vms)]
            base, took = boot(srv, [f"{n}-base" for n in names], victim.name)
            figures["boot"].append(took)
            delete(srv, base)
            ids, _ = boot(srv, names, victim.name)
            start = time.monotonic()
            victim.kill()
            host = f"/hosts/{victim.name}"
            until(lambda h=host: srv.client.get(h).json()["state"] != "up")
            figures["detect"].append(time.monotonic() - start)
            until(lambda h=host: srv.client.get(h).json()["state"] == "down")
            figures["fence"].append(time.monotonic() - start)

            def moved(ids: list[str] = ids, victim_id: str = srv.client.get(host).json()["id"]):
                insts = [srv.instance(i) for i in ids]
                return all(
                    i["status"] == "running"
                    and i["task_state"] is None
                    and i["host_id"] != victim_id
                    for i in insts
                )

            until(moved)
            figures["restart"].append(time.monotonic() - start)
            delete(srv, ids)
            victim.start(cluster.shared)
            until(lambda h=host: srv.client.get(h).json()["state"] == "up")
    finally:
        try:
            srv.stop()
        finally:
            cluster.down(purge=True)
    print(
        f"{args.rounds} round(s), {args.vms} HA VM(s) per killed host, "
        f"down-after {args.down_after:g} s"
    )
    for name, values in figures.items():
        print(f"  {name:8s} median {statistics.median(values):6.1f} s   max {max(values):6.1f} s")
    boot_s = statistics.median(figures["boot"])
    restart = statistics.median(figures["restart"])
    overhead = restart - args.down_after - boot_s
    print(
        f"  failover overhead beyond down-after + boot: {overhead:.1f} s "
        f"(restart / (down-after + boot) = {restart / (args.down_after + boot_s):.2f})"
    )
    print(f"  target: restart < 60 s -> {'met' if max(figures['restart']) < 60 else 'NOT met'}")


if __name__ == "__main__":
    main()
