"""Metrics store benchmark: N instances sampled for D days, with roll-up and pruning
as the collector does them; rows kept at each resolution, and the time to read
the series of a 24-hour and a 7-day chart.

    .venv/bin/python bench/metrics_store.py [--instances 1000] [--days 7]
                                            [--interval 15] [--database-url URL]

Simulated time, real database (a SQLite file unless --database-url names
PostgreSQL), the real store: every simulated hour, one sample per instance per
interval is written, finished buckets are rolled up and expired rows pruned
(raw kept 24 h, 5-minute averages 30 days, hourly a year).
Target: a 24-hour chart read in under 100 ms; rows kept bounded by retention.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import func, select

from nubis.db import migrate
from nubis.db.models.monitoring import InstanceSample
from nubis.db.session import Database
from nubis.services.monitoring import metrics
from nubis.services.monitoring.metrics import GRACE, Retention

START = 1_800_000_000 - 1_800_000_000 % 3600  # a whole hour
COLUMNS = ["instance_id", "resolution", "ts", *metrics.INSTANCE_METRICS]


def hour_of_samples(ids: list[str], hour: int, interval: int) -> list[tuple]:
    rows = []
    for n, iid in enumerate(ids):
        base = 10 + (n % 50)
        for ts in range(hour, hour + 3600, interval):
            load = base + random.random() * 20
            rows.append((iid, 0, ts, load, 200.0, 1e4, 2e4, 3.0, 4.0, 5e3, 6e3, 7.0, 8.0))
    return rows


def kept(db: Database) -> dict[int, int]:
    with db.begin() as s:
        found = s.execute(
            select(InstanceSample.resolution, func.count()).group_by(InstanceSample.resolution)
        ).all()
    return {res: n for res, n in found}


def timed_reads(db: Database, iid: str, span: int, now: int, retention: Retention) -> list[float]:
    out = []
    for _ in range(30):
        started = time.perf_counter()
        with db.begin() as s:
            found = metrics.series(s, metrics.INSTANCES, iid, now - span, now, None, retention, now)
        out.append((time.perf_counter() - started) * 1000)
    points = len(found.columns["ts"])
    print(
        f"  {span // 3600:>4} h chart: {points} points at step {found.step:.0f} s, "
        f"median {statistics.median(out):.1f} ms, max {max(out):.1f} ms"
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--interval", type=int, default=15)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    url = args.database_url or f"sqlite:///{Path(tempfile.mkdtemp()) / 'metrics.db'}"
    db = Database(url)
    migrate.upgrade(db.engine)
    retention = Retention(args.interval, 24, 30, 365)
    ids = [str(uuid.uuid4()) for _ in range(args.instances)]
    placeholders = ", ".join("?" if url.startswith("sqlite") else "%s" for _ in COLUMNS)
    sql = f"INSERT INTO instance_samples ({', '.join(COLUMNS)}) VALUES ({placeholders})"
    written, started = 0, time.perf_counter()
    hours = 24 * args.days
    for h in range(hours):
        hour = START + h * 3600
        rows = hour_of_samples(ids, hour, args.interval)
        with db.engine.begin() as conn:
            conn.exec_driver_sql(sql, rows)
        written += len(rows)
        now = hour + 3600 + GRACE + 1
        with db.begin() as s:
            metrics.rollup(s, now=now)
            metrics.prune(s, retention, now=now)
        if (h + 1) % 24 == 0:
            print(
                f"day {(h + 1) // 24}: {written:,} samples written, kept {kept(db)}, "
                f"{time.perf_counter() - started:.0f} s"
            )
    now = START + hours * 3600
    rows_kept = kept(db)
    print(
        f"{args.instances} instances x {args.days} days at {args.interval} s: "
        f"{written:,} samples written; rows kept: raw {rows_kept.get(0, 0):,}, "
        f"5-minute {rows_kept.get(300, 0):,}, hourly {rows_kept.get(3600, 0):,}"
    )
    bound = args.instances * (86400 // args.interval + 30 * 288 + 365 * 24)
    print(f"bound by retention: at most {bound:,} rows per {args.instances} instances")
    day = timed_reads(db, ids[len(ids) // 2], 86400, now, retention)
    timed_reads(db, ids[len(ids) // 2], 7 * 86400, now, retention)
    verdict = "met" if statistics.median(day) < 100 else "MISSED"
    print(f"24 h chart median {statistics.median(day):.1f} ms: target 100 ms {verdict}")


if __name__ == "__main__":
    main()
