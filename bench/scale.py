"""Control-plane scale (issue 27): a controller over 1,000 hosts and 20,000 instances.

    cd bench && ../.venv/bin/python scale.py [--hosts 1000] [--instances 20000]
                                             [--url postgresql+psycopg://...]

A started controller (no task workers) on a fresh database (SQLite, or a private
schema of the PostgreSQL database ``--url`` names). First 10 hosts and 100
instances, then the rest, filled as bench/scheduler.py does; the hosts are libvirt
``test:///`` hosts, so the HA monitor's checks go through the real driver.

Printed, at the small size (the baseline of the same run) and at the full one, with
their ratio:
- the REST instance list, a page of 100 with a status filter: p99 (target < 50 ms);
- a placement decision: p99 (target < 20 ms on PostgreSQL);
- a round of the HA monitor over every host (bound: its check interval);
- a round of host sharing between three controllers (bound: the tick);
and the process's peak resident memory (target < 500 MB).

Create+delete at concurrency 50, with one and with three controllers: bench/churn.py.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from collections.abc import Callable
from datetime import timedelta

from control_plane import control_plane, private_schema
from fastapi.testclient import TestClient
from scheduler import populate, time_decisions
from sqlalchemy import text

from nubis.api.app import create_app
from nubis.platform import Platform
from nubis.tasks import heartbeats
from nubis.tasks.host_shares import HostShares
from nubis.tasks.leadership import Leadership

API = "/api/v1"
SMALL_HOSTS, SMALL_INSTANCES = 10, 100


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[max(0, int(0.99 * len(ordered)) - 1)] * 1000


def timed(job: Callable[[], object], times: int) -> list[float]:
    samples = []
    for _ in range(times):
        start = time.perf_counter()
        job()
        samples.append(time.perf_counter() - start)
    return samples


def list_page(client: TestClient, bearer: dict[str, str]) -> None:
    resp = client.get(
        f"{API}/instances",
        params={"limit": 100, "status": "running", "sort": "-created_at"},
        headers=bearer,
    )
    if resp.status_code != 200 or len(resp.json()["items"]) != 100:
        raise SystemExit(f"instance list: {resp.status_code} {resp.text[:300]}")


def share_round(platform: Platform) -> Callable[[], object]:
    """One tick of three controllers sharing the hosts out (heartbeats first)."""
    db = platform.db
    shares = [
        HostShares(db, Leadership(db, f"bench-ctl-{i}", timedelta(seconds=20))) for i in range(3)
    ]

    def tick() -> None:
        with db.begin() as s:
            for c in shares:
                heartbeats.beat(s, c.leadership.holder, "")
        for c in shares:
            c.leadership.renew()
            c.rebalance()

    return tick


def measure(platform: Platform, client: TestClient, bearer: dict[str, str]) -> dict[str, float]:
    with platform.db.engine.begin() as conn:  # statistics, as autovacuum would gather them
        conn.execute(text("ANALYZE"))
    list_page(client, bearer)  # warm
    tick = share_round(platform)
    tick()  # the first round takes every host
    tick()
    listed = timed(lambda: list_page(client, bearer), 200)
    return {
        "list": p99(listed),
        "list_median": statistics.median(listed) * 1000,
        "decide": p99(time_decisions(platform.db, 500)),
        "ha": p99(timed(platform.ha.check_all, 3)),
        "share": p99(timed(tick, 5)),
    }


def run(url: str | None, hosts: int, instances: int) -> None:
    backend = url.split(":")[0].split("+")[0] if url else "sqlite"
    with control_plane("scale", url) as platform:
        # the HA monitor and the reconciliation run as in a server; the rounds timed
        # here are extra ones
        password = (platform.settings.data_dir / "admin-password").read_text().strip()
        with TestClient(create_app(platform, manage_lifecycle=False)) as client:
            token = client.post(
                f"{API}/auth/tokens", json={"username": "admin", "password": password}
            ).json()["token"]
            bearer = {"Authorization": f"Bearer {token}"}

            def fake_host(start: int) -> Callable[[int], str]:
                return lambda i: f"test:///default?host={start + i}"

            populate(platform.db, SMALL_HOSTS, SMALL_INSTANCES, fake_host(0), "small-")
            small = measure(platform, client, bearer)
            rest = (hosts - SMALL_HOSTS, instances - SMALL_INSTANCES)
            populate(platform.db, *rest, fake_host(SMALL_HOSTS), "rest-")
            full = measure(platform, client, bearer)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    interval = platform.settings.ha_check_interval_seconds
    tick = platform.settings.task_takeover_seconds / 4
    print(f"scale on {backend}: {SMALL_HOSTS} -> {hosts} hosts, "
          f"{SMALL_INSTANCES} -> {instances} instances (p99, ms; ratio full/small)")  # fmt: skip
    for key, label, target in (
        ("list", "instance list, page of 100, filtered", "< 50 ms"),
        ("list_median", "  the same, median (not p99)", "-"),
        ("decide", "placement decision", "< 20 ms on PostgreSQL"),
        ("ha", "HA monitor round over every host", f"< {interval * 1000:.0f} ms (interval)"),
        ("share", "host sharing round, 3 controllers", f"< {tick * 1000:.0f} ms (tick)"),
    ):
        ratio = full[key] / small[key] if small[key] else float("nan")
        print(f"  {label:<40} {small[key]:8.2f} -> {full[key]:8.2f}  x{ratio:5.1f}   "
              f"target {target}")  # fmt: skip
    print(f"  peak resident memory {rss:.0f} MB (target < 500 MB)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--instances", type=int, default=20000)
    parser.add_argument("--url", help="PostgreSQL URL (default: a fresh SQLite file)")
    args = parser.parse_args()
    if args.url:
        with private_schema(args.url) as url:
            run(url, args.hosts, args.instances)
        return
    run(None, args.hosts, args.instances)


if __name__ == "__main__":
    main()
