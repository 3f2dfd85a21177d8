"""Metering and rating: what each project used, hour by hour, and what it costs.

A sweep (every ``metering_interval_seconds``) attributes the time since the last
sweep to what exists at the sweep: instances that are running or paused
(instance hours, by flavor), volumes, instance snapshots, volume snapshots and
project images (GiB-hours). Usage accumulates in one row per resource, metric
and hour; a sweep that spans an hour boundary is split at it. The rating table
prices a unit of each metric (a flavor's own price before the metric's default);
a monthly report multiplies, rounds each line to the cent and adds them up.
"""

from __future__ import annotations

import calendar
import csv
import io
import logging
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from nubis.db.models import (
    Flavor,
    Image,
    ImageStatus,
    Instance,
    InstanceStatus,
    Snapshot,
    SnapshotStatus,
    Volume,
    VolumeSnapshot,
    VolumeSnapshotStatus,
    VolumeStatus,
    utcnow,
)
from nubis.db.models.metering import MeteringMark, Rate, UsageRecord
from nubis.db.session import Database
from nubis.services.core.errors import BadRequest, NotFoundError

log = logging.getLogger(__name__)
GIB = 1024**3
CENT = Decimal("0.01")
METRICS = {  # metric -> unit
    "instance.hours": "hour",
    "volume.gib_hours": "GiB-hour",
    "snapshot.gib_hours": "GiB-hour",
    "image.gib_hours": "GiB-hour",
}
BILLED_STATES = (InstanceStatus.RUNNING, InstanceStatus.PAUSED)
MONTH_RE = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


@dataclass(frozen=True)
class Use:
    project_id: str
    resource_type: str
    resource_id: str
    resource_name: str
    metric: str
    dimension: str
    per_hour: float  # units per hour: 1 for an instance, its GiB for storage


def what_is_used(session: Session) -> list[Use]:
    flavors = {f.id: f.name for f in session.scalars(select(Flavor))}
    uses = [
        Use(
            i.project_id,
            "instance",
            i.id,
            i.name,
            "instance.hours",
            flavors.get(i.flavor_id or "", ""),
            1.0,
        )
        for i in session.scalars(select(Instance).where(Instance.status.in_(BILLED_STATES)))
    ]
    uses += [
        Use(v.project_id, "volume", v.id, v.name, "volume.gib_hours", "", float(v.size_gib))
        for v in session.scalars(select(Volume).where(Volume.status != VolumeStatus.DELETING))
    ]
    snapshots = session.execute(  # an instance snapshot counts its instance's disk size
        select(Snapshot, Instance.disk_gib)
        .join(Instance, Instance.id == Snapshot.instance_id)
        .where(Snapshot.status == SnapshotStatus.AVAILABLE)
    ).all()
    uses += [
        Use(s.project_id, "snapshot", s.id, s.name, "snapshot.gib_hours", "", float(disk))
        for s, disk in snapshots
    ]
    uses += [
        Use(s.project_id, "snapshot", s.id, s.name, "snapshot.gib_hours", "", float(s.size_gib))
        for s in session.scalars(
            select(VolumeSnapshot).where(VolumeSnapshot.status == VolumeSnapshotStatus.AVAILABLE)
        )
    ]
    uses += [
        Use(i.project_id, "image", i.id, i.name, "image.gib_hours", "", (i.size or 0) / GIB)
        for i in session.scalars(
            select(Image).where(Image.project_id.is_not(None), Image.status == ImageStatus.ACTIVE)
        )
    ]
    return uses


def _hours(start: datetime, end: datetime) -> Iterator[tuple[datetime, float]]:
    """(hour start, hours of [start, end) within that hour), hour by hour."""
    cursor = start
    while cursor < end:
        hour = cursor.replace(minute=0, second=0, microsecond=0)
        stop = min(end, hour + timedelta(hours=1))
        yield hour, (stop - cursor).total_seconds() / 3600
        cursor = stop


def sweep(session: Session, now: datetime | None = None) -> int:
    """Record the usage since the last sweep; the number of rows touched."""
    now = now or utcnow()
    mark = session.get(MeteringMark, "usage")
    if mark is None:  # the first sweep starts the clock
        session.add(MeteringMark(name="usage", done_until=now))
        return 0
    start = mark.done_until
    if now <= start:
        return 0
    touched = 0
    spans = list(_hours(start, now))
    existing = {
        (r.resource_id, r.metric, r.period_start): r
        for r in session.scalars(
            select(UsageRecord).where(UsageRecord.period_start.in_([h for h, _ in spans]))
        )
    }
    for use in what_is_used(session):
        for hour, hours in spans:
            row = existing.get((use.resource_id, use.metric, hour))
            if row is None:
                row = UsageRecord(
                    project_id=use.project_id,
                    resource_type=use.resource_type,
                    resource_id=use.resource_id,
                    resource_name=use.resource_name,
                    metric=use.metric,
                    dimension=use.dimension,
                    period_start=hour,
                    quantity=0.0,
                )
                session.add(row)
                existing[(use.resource_id, use.metric, hour)] = row
            row.quantity += use.per_hour * hours
            touched += 1
    mark.done_until = now
    return touched


# -- rates -----------------------------------------------------------------------------
def set_rate(session: Session, metric: str, dimension: str, price: str, currency: str) -> Rate:
    if metric not in METRICS:
        raise BadRequest(f"metric must be one of {', '.join(METRICS)}")
    if dimension and metric != "instance.hours":
        raise BadRequest("only instance.hours is priced per flavor (dimension)")
    if dimension and session.scalar(select(Flavor).where(Flavor.name == dimension)) is None:
        raise NotFoundError(f"flavor {dimension!r} not found")
    try:
        amount = Decimal(price)
    except InvalidOperation as exc:
        raise BadRequest(f"price {price!r} is not a number") from exc
    if not amount.is_finite() or amount < 0 or amount.as_tuple().exponent < -6:  # type: ignore[operator]
        raise BadRequest("price must be a non-negative number with at most 6 decimals")
    if not re.fullmatch(r"[A-Z]{3}", currency):
        raise BadRequest("currency must be a three-letter code (EUR, USD, ...)")
    others = session.scalar(select(Rate.currency).where(Rate.currency != currency).limit(1))
    if others is not None:
        raise BadRequest(f"every rate is in {others}: one currency per rating table")
    rate = session.scalar(select(Rate).where(Rate.metric == metric, Rate.dimension == dimension))
    if rate is None:
        rate = Rate(metric=metric, dimension=dimension, price=amount, currency=currency)
        session.add(rate)
    else:
        rate.price, rate.currency = amount, currency
    session.flush()
    return rate


def delete_rate(session: Session, rate_id: str) -> None:
    if session.execute(delete(Rate).where(Rate.id == rate_id)).rowcount != 1:  # type: ignore[attr-defined]
        raise NotFoundError(f"rate {rate_id!r} not found")


# -- reports ---------------------------------------------------------------------------
@dataclass
class Line:
    metric: str
    dimension: str
    unit: str
    quantity: float
    unit_price: Decimal | None  # None: no rate for it (not charged)
    cost: Decimal


@dataclass
class Report:
    project_id: str
    month: str
    currency: str
    lines: list[Line] = field(default_factory=list)
    daily: list[tuple[str, Decimal]] = field(default_factory=list)
    total: Decimal = Decimal("0.00")


def month_range(month: str) -> tuple[datetime, datetime]:
    found = MONTH_RE.match(month)
    if not found:
        raise BadRequest("month must be YYYY-MM")
    year, mon = int(found.group(1)), int(found.group(2))
    start = datetime(year, mon, 1, tzinfo=UTC)
    days = calendar.monthrange(year, mon)[1]
    return start, start + timedelta(days=days)


def _price(rates: dict[tuple[str, str], Rate], metric: str, dimension: str) -> Decimal | None:
    rate = rates.get((metric, dimension)) or rates.get((metric, ""))
    return None if rate is None else Decimal(rate.price)


def report(session: Session, project_id: str, month: str) -> Report:
    start, end = month_range(month)
    rates = {(r.metric, r.dimension): r for r in session.scalars(select(Rate))}
    currency = next(iter(rates.values())).currency if rates else "EUR"
    hourly = session.execute(  # summed per hour in SQL: a few thousand rows a month
        select(
            UsageRecord.metric,
            UsageRecord.dimension,
            UsageRecord.period_start,
            func.sum(UsageRecord.quantity),
        )
        .where(
            UsageRecord.project_id == project_id,
            UsageRecord.period_start >= start,
            UsageRecord.period_start < end,
        )
        .group_by(UsageRecord.metric, UsageRecord.dimension, UsageRecord.period_start)
    ).all()
    sums: dict[tuple[str, str], float] = {}
    daily: dict[date, Decimal] = {}
    for metric, dimension, hour, quantity in hourly:
        key = (metric, dimension)
        sums[key] = sums.get(key, 0.0) + quantity
        price = _price(rates, metric, dimension)
        if price is not None:
            day = hour.date()
            daily[day] = daily.get(day, Decimal(0)) + price * Decimal(repr(quantity))
    out = Report(project_id, month, currency)
    for (metric, dimension), quantity in sorted(sums.items()):
        price = _price(rates, metric, dimension)
        exact = Decimal(repr(quantity))
        cost = (
            (price * exact).quantize(CENT, ROUND_HALF_UP) if price is not None else Decimal("0.00")
        )
        out.lines.append(Line(metric, dimension, METRICS[metric], round(quantity, 6), price, cost))
    out.total = sum((line.cost for line in out.lines), Decimal("0.00"))
    out.daily = [(d.isoformat(), v.quantize(CENT, ROUND_HALF_UP)) for d, v in sorted(daily.items())]
    return out


def report_csv(rep: Report) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(
        [
            "project_id",
            "month",
            "metric",
            "dimension",
            "unit",
            "quantity",
            "unit_price",
            "cost",
            "currency",
        ]
    )
    for line in rep.lines:
        price = "" if line.unit_price is None else str(line.unit_price)
        writer.writerow(
            [
                rep.project_id,
                rep.month,
                line.metric,
                line.dimension,
                line.unit,
                line.quantity,
                price,
                line.cost,
                rep.currency,
            ]
        )
    writer.writerow([rep.project_id, rep.month, "total", "", "", "", "", rep.total, rep.currency])
    return buf.getvalue()


class Meter:
    """The sweeping thread."""

    def __init__(self, db: Database, interval: float) -> None:
        self.db = db
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # whether this controller runs the loop's next round (one controller at a
        # time when several share the database: Leadership.gate)
        self.lead: Callable[[], bool] = lambda: True

    def sweep_now(self) -> int:
        with self.db.begin() as s:
            return sweep(s)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                if self.lead():
                    self.sweep_now()
            except Exception:
                log.exception("metering sweep failed")
            self._stop.wait(self.interval)

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="metering", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
