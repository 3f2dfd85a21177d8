"""The metrics store: samples of hosts and instances at three resolutions, rolled up
and pruned so that storage stays bounded, and the series a chart asks for.

Raw samples (one per collection interval) are kept ``raw_hours``; 5-minute averages
``five_min_days``; hourly averages ``hourly_days``. A query reads the finest
resolution still kept for its whole range; when that would be more than
``MAX_POINTS`` points, they are averaged into wider buckets as they are read.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, delete, func, insert, literal, select
from sqlalchemy.orm import Session

from nubis.db.models.monitoring import RAW, HostSample, InstanceSample, SampleRollup
from nubis.services.core.errors import BadRequest

FIVE_MIN, HOUR = 300, 3600
MAX_POINTS = 1500
GRACE = 60  # seconds a late sample may take to be written

INSTANCE_METRICS: dict[str, str] = {  # name -> unit
    "cpu_pct": "%",
    "memory_mib": "MiB",
    "disk_read_bps": "B/s",
    "disk_write_bps": "B/s",
    "disk_read_iops": "1/s",
    "disk_write_iops": "1/s",
    "net_rx_bps": "B/s",
    "net_tx_bps": "B/s",
    "net_rx_pps": "1/s",
    "net_tx_pps": "1/s",
}
HOST_METRICS: dict[str, str] = {
    "cpu_pct": "%",
    "memory_used_mib": "MiB",
    "memory_total_mib": "MiB",
    "memory_allocated_pct": "%",
    "storage_used_gib": "GiB",
    "storage_total_gib": "GiB",
}


@dataclass(frozen=True)
class Retention:
    interval: float
    raw_hours: int
    five_min_days: int
    hourly_days: int

    def levels(self) -> list[tuple[int, float, int]]:
        """(resolution, seconds per point, seconds kept), finest first."""
        return [
            (RAW, self.interval, self.raw_hours * 3600),
            (FIVE_MIN, FIVE_MIN, self.five_min_days * 86400),
            (HOUR, HOUR, self.hourly_days * 86400),
        ]


@dataclass(frozen=True)
class Kind:
    """Instances or hosts: their table, key column and metrics."""

    name: str
    model: Any
    key: Any
    metrics: dict[str, str]


INSTANCES = Kind("instance", InstanceSample, InstanceSample.instance_id, INSTANCE_METRICS)
HOSTS = Kind("host", HostSample, HostSample.host_id, HOST_METRICS)
KINDS = (INSTANCES, HOSTS)


@dataclass
class Series:
    resolution: int
    step: float
    since: int
    until: int
    columns: dict[str, list[Any]]  # "ts" and one list per metric, in time order


def store(session: Session, kind: Kind, rows: list[dict[str, Any]]) -> None:
    if rows:
        session.execute(insert(kind.model), [{"resolution": RAW, **row} for row in rows])


def series(
    session: Session,
    kind: Kind,
    resource_id: str,
    since: int,
    until: int,
    metrics: list[str] | None,
    retention: Retention,
    now: float | None = None,
) -> Series:
    wanted = metrics or list(kind.metrics)
    unknown = [m for m in wanted if m not in kind.metrics]
    if unknown:
        raise BadRequest(
            f"unknown {kind.name} metric(s) {', '.join(unknown)}; known: {', '.join(kind.metrics)}"
        )
    if until <= since:
        raise BadRequest("until must be after since")
    now = time.time() if now is None else now
    span = until - since
    levels = retention.levels()
    resolution, per_point, _kept = next(
        (level for level in levels if since >= now - level[2]), levels[-1]
    )
    # more points than a chart can show: averaged into wider buckets as they are read
    bucket = max(1, math.ceil(span / MAX_POINTS / per_point)) * per_point
    model = kind.model
    where = [kind.key == resource_id, model.resolution == resolution]
    where += [model.ts >= since, model.ts < until]
    if bucket <= per_point:
        columns = [model.ts, *(getattr(model, m) for m in wanted)]
        query = select(*columns).where(*where).order_by(model.ts)
    else:
        start = (model.ts // int(bucket)) * int(bucket)
        columns = [start, *(func.avg(getattr(model, m)) for m in wanted)]
        query = select(*columns).where(*where).group_by(start).order_by(start)
    rows = session.execute(query).all()
    out: dict[str, list[Any]] = {"ts": [int(r[0]) for r in rows]}
    for i, m in enumerate(wanted, start=1):
        out[m] = [None if r[i] is None else round(r[i], 3) for r in rows]
    step = float(max(bucket, per_point))
    return Series(resolution, step, since, until, out)


def latest(session: Session, kind: Kind, since: int) -> dict[str, dict[str, Any]]:
    """The newest raw sample of every resource sampled since ``since``."""
    model = kind.model
    newest = (
        select(kind.key.label("rid"), func.max(model.ts).label("ts"))
        .where(model.resolution == RAW, model.ts >= since)
        .group_by(kind.key)
        .subquery()
    )
    rows = session.execute(
        select(model)
        .join(newest, (kind.key == newest.c.rid) & (model.ts == newest.c.ts))
        .where(model.resolution == RAW)
    ).scalars()
    return {getattr(r, kind.key.key): {m: getattr(r, m) for m in kind.metrics} for r in rows}


def _bucketed(kind: Kind, source: int, target: int, start: int, end: int) -> Select:
    model = kind.model
    bucket = (model.ts // target) * target  # floor division: SQL integer division
    return (
        select(
            kind.key,
            literal(target),
            bucket,
            *(func.avg(getattr(model, m)) for m in kind.metrics),
        )
        .where(model.resolution == source, model.ts >= start, model.ts < end)
        .group_by(kind.key, bucket)
    )


def rollup(session: Session, now: float | None = None) -> int:
    """Average finished buckets: raw into 5-minute, 5-minute into hourly. Each bucket
    is rolled up once (a watermark per table and resolution). Rows written."""
    now = int(time.time() if now is None else now)
    written = 0
    for kind in KINDS:
        for source, target in ((RAW, FIVE_MIN), (FIVE_MIN, HOUR)):
            mark = session.get(SampleRollup, (kind.model.__tablename__, target))
            end = (now - GRACE) // target * target  # buckets whose samples are all in
            if mark is None:
                first = session.scalar(
                    select(func.min(kind.model.ts)).where(kind.model.resolution == source)
                )
                if first is None:
                    continue
                mark = SampleRollup(
                    sample_table=kind.model.__tablename__,
                    resolution=target,
                    done_until=first // target * target,
                )
                session.add(mark)
            if end <= mark.done_until:
                continue
            columns = [kind.key.key, "resolution", "ts", *kind.metrics]
            result = session.execute(
                insert(kind.model).from_select(
                    columns, _bucketed(kind, source, target, mark.done_until, end)
                )
            )
            written += max(result.rowcount or 0, 0)  # type: ignore[attr-defined]
            mark.done_until = end
    return written


def prune(session: Session, retention: Retention, now: float | None = None) -> int:
    now = time.time() if now is None else now
    removed = 0
    for kind in KINDS:
        for resolution, _step, kept in retention.levels():
            result = session.execute(
                delete(kind.model).where(
                    kind.model.resolution == resolution, kind.model.ts < int(now - kept)
                )
            )
            removed += max(result.rowcount or 0, 0)  # type: ignore[attr-defined]
    return removed
