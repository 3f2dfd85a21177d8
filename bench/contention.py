"""Contention benchmark: the platform under a login flood and a burst of tasks, on the
embedded SQLite and on PostgreSQL, against a real server and the local libvirtd.

    .venv/bin/python bench/contention.py [--database sqlite|postgresql|both]
        [--seconds 20] [--burst 24] [--postgresql-url URL]

(a) Login flood: 8 clients send wrong passwords for ``--seconds`` while a logged-in
    user lists instances twice a second. Printed: the user's median and p95
    latency calm and under the flood, their ratio (target: median under 3x), the
    user's failed requests (target: 0), and what the flood got (401: a password
    was checked; 429: the address was throttled before any check).
(b) Burst: ``--burst`` instances created at once, then deleted at once, on one host;
    then the same one at a time. Printed: drain times and their ratio, failed
    tasks (target: 0), "database is locked" in the server's log (target: 0).

The PostgreSQL URL defaults to NUBIS_TEST_DATABASE_URL (what ./setup.sh test sets up);
each run gets a fresh schema of its own.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.server import NubisServer  # noqa: E402
from tests.pg import fresh_schema  # noqa: E402

FLOODERS = 8


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, round(0.95 * len(ordered)) - 1)]


@contextmanager
def database(kind: str, pg_url: str | None) -> Iterator[str | None]:
    """None: the server's embedded SQLite; else a fresh PostgreSQL schema's URL."""
    if kind == "sqlite":
        yield None
        return
    if not pg_url:
        raise SystemExit("PostgreSQL: give --postgresql-url or NUBIS_TEST_DATABASE_URL")
    with fresh_schema(pg_url, "bench") as url:
        yield url


@contextmanager
def server(url: str | None) -> Iterator[NubisServer]:
    env = {"NUBIS_RECONCILE_INTERVAL_SECONDS": "600"}
    if url:
        env["NUBIS_DATABASE_URL"] = url
    srv = NubisServer(Path(tempfile.mkdtemp(prefix="nubis-bench-contention-")) / "data", **env)
    srv.start()
    try:
        yield srv
    finally:  # whatever happened, no instance of the run is left behind
        left = srv.client.get("/instances", params={"limit": 1000}).json()["items"]
        tasks = [srv.client.delete(f"/instances/{i['id']}").json() for i in left]
        for task in tasks:
            if "task_id" in task:
                srv.wait_task(task["task_id"], timeout=600)
        srv.stop()


def list_for(srv: NubisServer, seconds: float) -> tuple[list[float], int]:
    """GET /instances twice a second for ``seconds``: latencies, failed requests."""
    latencies, failed = [], 0
    with httpx.Client(
        base_url=str(srv.client.base_url), headers=srv.client.headers, verify=srv.verify()
    ) as client:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t0 = time.perf_counter()
            try:
                ok = client.get("/instances", timeout=30).status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - t0)
            failed += not ok
            time.sleep(max(0.0, 0.5 - (time.perf_counter() - t0)))
    return latencies, failed


def login_flood(srv: NubisServer, seconds: float) -> None:
    calm, calm_failed = list_for(srv, min(seconds, 10))
    stop = threading.Event()
    answers: dict[int, int] = {}
    lock = threading.Lock()

    def flood(i: int) -> None:
        with httpx.Client(base_url=srv.url, verify=srv.verify(), timeout=30) as client:
            while not stop.is_set():
                body = {"username": "admin" if i % 2 else f"guess-{i}", "password": "wrong-guess"}
                try:
                    code = client.post("/api/v1/auth/tokens", json=body).status_code
                except httpx.HTTPError:
                    code = 0
                with lock:
                    answers[code] = answers.get(code, 0) + 1

    threads = [threading.Thread(target=flood, args=(i,), daemon=True) for i in range(FLOODERS)]
    for t in threads:
        t.start()
    loaded, loaded_failed = list_for(srv, seconds)
    stop.set()
    for t in threads:
        t.join()
    ratio = statistics.median(loaded) / statistics.median(calm)
    print(
        f"  (a) login flood: {FLOODERS} clients, {seconds:.0f} s, answers {sorted(answers.items())}"
    )
    print(
        f"      user GET /instances calm: median {statistics.median(calm) * 1000:.1f} ms, "
        f"p95 {p95(calm) * 1000:.1f} ms ({len(calm)} requests, {calm_failed} failed)"
    )
    print(
        f"      under the flood: median {statistics.median(loaded) * 1000:.1f} ms, "
        f"p95 {p95(loaded) * 1000:.1f} ms ({len(loaded)} requests, {loaded_failed} failed)"
    )
    print(f"      median ratio flood/calm: {ratio:.2f}x (target < 3x), failed: {loaded_failed}")


def run_tasks(srv: NubisServer, requests: list[tuple[str, str, dict | None]], parallel: int):
    """Send the requests (``parallel`` at a time) and wait for their tasks: the seconds
    until the last ended, the ids of the instances made, the failed tasks."""

    def one(req: tuple[str, str, dict | None]) -> tuple[str | None, dict]:
        method, path, body = req
        resp = srv.client.request(method, path, json=body)
        resp.raise_for_status()
        out = resp.json()
        return out.get("id"), srv.wait_task(out["task_id"], timeout=900)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        results = list(pool.map(one, requests))  # a refused request: the run stops
    elapsed = time.perf_counter() - t0
    failed = [task for _id, task in results if task["status"] != "succeeded"]
    return elapsed, [i for i, _t in results if i], failed


def burst(srv: NubisServer, count: int) -> None:
    # one host of 2 cores: let it take the burst's vCPUs (bookkeeping only for TCG),
    # and the project the burst's instances
    srv.client.patch("/clusters/default", json={"cpu_ratio": 32.0}).raise_for_status()
    unlimited = {"instances": -1, "vcpus": -1, "memory_mib": -1}
    srv.client.put("/projects/admin/quotas", json=unlimited).raise_for_status()
    figures = {}
    for label, parallel in (("at once", count), ("one at a time", 1)):
        creates = [
            ("POST", "/instances", {"name": f"b{parallel}-{i}", "image": "nubis-tiny",
                                    "flavor": "m1.tiny", "networks": []})
            for i in range(count)
        ]  # fmt: skip
        made_s, ids, failed_made = run_tasks(srv, creates, parallel)
        deletes = [("DELETE", f"/instances/{iid}", None) for iid in ids]
        gone_s, _ids, failed_gone = run_tasks(srv, deletes, parallel)
        figures[label] = (made_s, gone_s, len(failed_made) + len(failed_gone))
        for task in failed_made + failed_gone:
            print(f"      failed: {task['kind']}: {task['error']}")
    log = (srv.data_dir / "logs" / "nubis.log").read_text()
    locked = log.count("database is locked")
    (c_at, d_at, f_at), (c_one, d_one, f_one) = figures["at once"], figures["one at a time"]
    print(f"  (b) burst of {count} tiny guests on one host")
    print(f"      at once:       creates drained in {c_at:.1f} s, deletes in {d_at:.1f} s")
    print(f"      one at a time: creates took {c_one:.1f} s, deletes {d_one:.1f} s")
    print(
        f"      ratio at once / one at a time: creates {c_at / c_one:.2f}, "
        f"deletes {d_at / d_one:.2f}"
    )
    print(
        f"      failed tasks: {f_at + f_one} (target 0); 'database is locked': {locked} (target 0)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--burst", type=int, default=24)
    parser.add_argument("--postgresql-url", default=os.environ.get("NUBIS_TEST_DATABASE_URL"))
    args = parser.parse_args()
    kinds = ("sqlite", "postgresql") if args.database == "both" else (args.database,)
    for kind in kinds:
        print(f"{kind}:")
        with database(kind, args.postgresql_url) as url, server(url) as srv:
            login_flood(srv, args.seconds)
            burst(srv, args.burst)


if __name__ == "__main__":
    main()
