"""Web console benchmark: server time of every page with 1,000 instances.

    .venv/bin/python bench/web_pages.py [--instances 1000] [--requests 30]
                                        [--database-url URL]

A control plane (no task workers, libvirt's test:/// driver as its host, a SQLite
file unless --database-url names PostgreSQL) with N instances on that host, three
tasks and three events each and a day of hourly usage records each, all in the
admin's project. The admin signs in through the login form
(cookie session) and every page is fetched, in-process through the whole ASGI
stack (session check, policy, queries, template); median, p95 and worst in ms.
Target: no page over 300 ms.
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta

from control_plane import control_plane
from fastapi.testclient import TestClient
from sqlalchemy import insert, select, update

from nubis.api.app import create_app
from nubis.db.models import Flavor, Host, Image, Instance, Project, Task
from nubis.db.models.metering import UsageRecord
from nubis.db.models.monitoring import Event
from nubis.platform import Platform

TARGET_MS = 300.0
STATUSES = ("running", "stopped", "paused", "error")
USAGE_HOURS = 24  # usage records per instance: one per hour


def populate(platform: Platform, count: int) -> tuple[str, str]:
    """N instances (and 3N tasks) on the test:/// host; (an instance id, the host id)."""
    now = datetime.now(UTC)
    with platform.db.begin() as s:
        project = s.scalars(select(Project).where(Project.name == "admin")).one()
        host = s.scalars(select(Host)).one()
        flavor = s.scalars(select(Flavor).where(Flavor.name == "m1.tiny")).one()
        image_id = str(uuid.uuid4())
        s.execute(
            insert(Image),
            [dict(id=image_id, name="bench-image", status="active", created_at=now)],
        )
        rows, tasks = [], []
        for i in range(count):
            iid = str(uuid.uuid4())
            created = now - timedelta(seconds=count - i)
            rows.append(
                dict(
                    id=iid,
                    name=f"vm-{i:04d}",
                    project_id=project.id,
                    host_id=host.id,
                    image_id=image_id,
                    flavor_id=flavor.id,
                    vcpus=1,
                    memory_mib=128,
                    disk_gib=1,
                    status=STATUSES[i % len(STATUSES)],
                    created_at=created,
                    updated_at=created,
                )
            )
            for kind in ("instance.create", "instance.stop", "instance.start"):
                tasks.append(
                    dict(
                        id=str(uuid.uuid4()),
                        kind=kind,
                        resource_type="instance",
                        resource_id=iid,
                        project_id=project.id,
                        status="succeeded",
                        progress=100,
                        params={},
                        created_at=created,
                    )
                )
        s.execute(insert(Instance), rows)
        s.execute(insert(Task), tasks)
        s.execute(
            insert(Event),
            [
                dict(
                    id=str(uuid.uuid4()),
                    created_at=t["created_at"],
                    project_id=project.id,
                    resource_type="instance",
                    resource_id=t["resource_id"],
                    kind="task.succeeded",
                    severity="info",
                    message=f"{t['kind']} succeeded",
                )
                for t in tasks
            ],
        )
        hour = now.replace(minute=0, second=0, microsecond=0)
        s.execute(
            insert(UsageRecord),
            [
                dict(
                    id=str(uuid.uuid4()),
                    project_id=project.id,
                    resource_type="instance",
                    resource_id=r["id"],
                    resource_name=r["name"],
                    metric="instance.hours",
                    dimension="m1.tiny",
                    period_start=hour - timedelta(hours=h),
                    quantity=1.0,
                )
                for r in rows
                for h in range(USAGE_HOURS)
            ],
        )
        s.execute(
            update(Host)
            .where(Host.id == host.id)
            .values(instance_count=count, alloc_vcpus=count, alloc_memory_mib=128 * count)
        )
        return rows[count // 2]["id"], host.id


def sign_in(client: TestClient, password: str) -> None:
    form = client.get("/login").text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
    resp = client.post(
        "/login",
        data={"username": "admin", "password": password, "csrf_token": csrf},
        follow_redirects=False,
    )
    if resp.status_code != 303:
        raise SystemExit(f"login failed: {resp.status_code} {resp.text[:200]}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    with control_plane("web", args.database_url) as platform:
        platform.hosts.add(platform.db, "fake", "test:///default")
        instance_id, host_id = populate(platform, args.instances)
        pages = [
            "/dashboard",
            "/instances",
            "/instances?sort=-status&status=running&q=vm-0",
            f"/instances?sort=-created_at&offset={args.instances - 25}",
            f"/instances/{instance_id}",
            "/instances/new",
            f"/instances/{instance_id}/console",
            "/hosts",
            f"/hosts/{host_id}",
            "/images",
            "/flavors",
            "/volumes",
            "/networks",
            "/projects",
            "/events",
            "/alarms",
            "/usage",
        ]
        password = (platform.settings.data_dir / "admin-password").read_text().strip()
        with TestClient(create_app(platform, manage_lifecycle=False)) as client:
            sign_in(client, password)
            print(
                f"{args.instances} instances, {3 * args.instances} tasks and events, "
                f"{USAGE_HOURS * args.instances} usage records; ms per page"
            )
            worst = 0.0
            for path in pages:
                samples = []
                for _ in range(args.requests):
                    start = time.perf_counter()
                    resp = client.get(path)
                    samples.append((time.perf_counter() - start) * 1000)
                    if resp.status_code != 200:
                        raise SystemExit(f"{path}: {resp.status_code} {resp.text[:300]}")
                p95 = statistics.quantiles(samples, n=20)[18]
                worst = max(worst, max(samples))
                print(
                    f"{path[:58]:<58} median {statistics.median(samples):6.1f}"
                    f"   p95 {p95:6.1f}   max {max(samples):6.1f}"
                )
            verdict = "met" if worst <= TARGET_MS else "MISSED"
            print(f"slowest request {worst:.1f} ms: target {TARGET_MS:.0f} ms {verdict}")


if __name__ == "__main__":
    main()
