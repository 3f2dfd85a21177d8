"""Scheduler benchmark: placement decisions per second and latency, from the database.

    .venv/bin/python bench/scheduler.py [--hosts 1000] [--instances 20000] [--decisions 2000]
                                        [--url postgresql+psycopg://...]

Builds a database with N hosts (one cluster) and M instances spread over them,
then times ``Scheduler.place`` (filters, weighers and the claim UPDATE) in its
own transaction, rolled back so every decision sees the same state.
Target: p99 under 20 ms per decision.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from control_plane import private_schema
from sqlalchemy import insert, text

from nubis.db import migrate
from nubis.db.models import Cluster, Host, Instance, Project, Zone
from nubis.db.session import Database
from nubis.services.scheduler import PlacementRequest, Scheduler


def tcp_host(i: int) -> str:
    return f"qemu+tcp://10.0.{i // 250}.{i % 250}/system"


def populate(
    db: Database,
    hosts: int,
    instances: int,
    uri: Callable[[int], str] = tcp_host,
    label: str = "",
) -> None:
    """``label``: what the names of this call's rows start with (to fill in twice)."""
    now = datetime.now(UTC)
    zone, cluster, project = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    host_ids = [str(uuid.uuid4()) for _ in range(hosts)]
    per_host = [0] * hosts
    rows = []
    for i in range(instances):
        h = i % hosts
        per_host[h] += 1
        rows.append(
            dict(
                id=str(uuid.uuid4()),
                name=f"{label}vm{i}",
                project_id=project,
                host_id=host_ids[h],
                vcpus=2,
                memory_mib=4096,
                disk_gib=20,
                status="running",
                created_at=now - timedelta(seconds=instances - i),  # one a second
                updated_at=now,
            )
        )
    with db.begin() as s:
        s.execute(insert(Zone), [dict(id=zone, name=f"{label}z", created_at=now)])
        s.execute(
            insert(Cluster),
            [
                dict(
                    id=cluster,
                    name=f"{label}c",
                    zone_id=zone,
                    cpu_ratio=3.0,
                    memory_ratio=1.0,
                    disk_ratio=1.0,
                    disable_threshold=0.85,
                    weigher="spread",
                    created_at=now,
                )
            ],
        )
        s.execute(insert(Project), [dict(id=project, name=f"{label}p", created_at=now)])
        s.execute(
            insert(Host),
            [
                dict(
                    id=hid,
                    name=f"{label}host-{i:04d}",
                    uri=uri(i),
                    cluster_id=cluster,
                    state="up",
                    enabled=True,
                    maintenance="none",
                    virt_type="kvm",
                    arch="x86_64",
                    cpus=64,
                    sockets=2,
                    cores=16,
                    threads=2,
                    memory_mib=512 * 1024,
                    disk_gib=10 * 1024,
                    alloc_vcpus=2 * per_host[i],
                    alloc_memory_mib=4096 * per_host[i],
                    alloc_disk_gib=20 * per_host[i],
                    instance_count=per_host[i],
                    created_at=now,
                )
                for i, hid in enumerate(host_ids)
            ],
        )
        if rows:
            s.execute(insert(Instance), rows)


def time_decisions(db: Database, decisions: int) -> list[float]:
    """Seconds each placement decision took (in its own transaction, rolled back so
    that every one sees the same state), sorted."""
    scheduler = Scheduler()
    flavors = [(1, 1024, 10), (2, 4096, 20), (4, 8192, 40)]
    rng = random.Random(7)
    times = []
    for _ in range(decisions):
        vcpus, mem, disk = rng.choice(flavors)
        req = PlacementRequest(vcpus=vcpus, memory_mib=mem, disk_gib=disk)
        t0 = time.perf_counter()
        with db.sessionmaker() as s, s.begin():
            scheduler.place(s, req)
            s.rollback()
        times.append(time.perf_counter() - t0)
    return sorted(times)


def run(url: str, hosts: int, instances: int, decisions: int) -> None:
    db = Database(url)
    migrate.upgrade(db.engine)
    populate(db, hosts, instances)
    with db.engine.begin() as conn:  # statistics, as autovacuum would gather them
        conn.execute(text("ANALYZE"))
    gc.freeze()  # as Platform.start() does in the server once it is up
    times = time_decisions(db, decisions)
    p99 = times[int(0.99 * len(times)) - 1]
    backend = url.split(":")[0].split("+")[0]
    print(f"scheduler on {backend}: {hosts} hosts, {instances} instances, {decisions} decisions")
    median = statistics.median(times) * 1000
    print(
        f"  {decisions / sum(times):8.1f} decisions/s   median {median:6.2f} ms"
        f"   p99 {p99 * 1000:6.2f} ms   (target p99 < 20 ms)"
    )
    db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--instances", type=int, default=20000)
    parser.add_argument("--decisions", type=int, default=2000)
    parser.add_argument("--url", help="database URL (default: a fresh SQLite file)")
    args = parser.parse_args()
    if args.url:
        with private_schema(args.url) as url:
            run(url, args.hosts, args.instances, args.decisions)
        return
    with tempfile.TemporaryDirectory() as tmp:
        run(f"sqlite:///{tmp}/bench.db", args.hosts, args.instances, args.decisions)


if __name__ == "__main__":
    main()
