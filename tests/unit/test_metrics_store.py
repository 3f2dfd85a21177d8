"""The metrics store on a real database: rates from counters, roll-up into 5-minute
and hourly averages, pruning by age, and which resolution a range is served at."""

import time

import pytest

from nubis.db.models.monitoring import InstanceSample
from nubis.drivers.libvirt.stats import DomainCounters, domain_counters
from nubis.services.monitoring import metrics
from nubis.services.monitoring.collector import (
    UNCERTAIN_SECONDS,
    Reading,
    instance_row,
    timed_read,
)
from nubis.services.monitoring.metrics import FIVE_MIN, HOUR, Retention

RETENTION = Retention(interval=15, raw_hours=24, five_min_days=30, hourly_days=365)
DAY = 86400
NOW = 1_800_000_000  # a round epoch second (a multiple of 3600)


def counters(cpu_ns: int, rd: int = 0, rx: int = 0) -> DomainCounters:
    return DomainCounters("i1", cpu_ns, 131072, 204800, rd, 0, rd // 4096, 0, rx, 0, rx // 1000, 0)


def test_rates_come_from_two_readings():
    first = instance_row("i1", 2, Reading(100.0, counters(10**9)), None)
    assert "cpu_pct" not in first and first["memory_mib"] == 200.0
    # 15 s later: 15 s of CPU time on 2 vCPUs = 50 %, 1.5 MB read, 30 kB received
    row = instance_row(
        "i1",
        2,
        Reading(115.0, counters(16 * 10**9, rd=1_536_000, rx=30_000)),
        Reading(100.0, counters(10**9)),
    )
    assert row["cpu_pct"] == pytest.approx(50.0)
    assert row["disk_read_bps"] == pytest.approx(102_400)
    assert row["disk_read_iops"] == pytest.approx(25)
    assert row["net_rx_bps"] == pytest.approx(2000) and row["net_rx_pps"] == pytest.approx(2)
    # the guest restarted: counters went back, no made-up rate
    restarted = instance_row(
        "i1", 2, Reading(130.0, counters(10**8)), Reading(115.0, counters(16 * 10**9))
    )
    assert restarted["cpu_pct"] is None


def test_a_reading_held_up_is_dropped_rather_than_stamped_late():
    # libvirt takes the counters at some moment of the call: a rate over a call held
    # up for seconds (a busy libvirtd) would be wrong, so such a reading is dropped
    # and the next rate spans from the reading before
    def prompt(_ref: object) -> str:
        return "counters"

    def held_up(_ref: object) -> str:
        time.sleep(UNCERTAIN_SECONDS + 0.1)
        return "counters"

    before = time.time()
    read = timed_read(prompt, None)
    assert read is not None and read[1] == "counters"
    assert before <= read[0] <= time.time()
    assert timed_read(held_up, None) is None


def test_libvirt_bulk_stats_are_summed_over_disks_and_nics():
    stats = {
        "cpu.time": 5,
        "balloon.current": 131072,
        "balloon.rss": 1024,
        "block.count": 2,
        "block.0.rd.bytes": 100,
        "block.1.rd.bytes": 50,
        "net.count": 1,
        "net.0.tx.pkts": 7,
    }
    c = domain_counters("u", stats)
    assert (c.rd_bytes, c.tx_pkts, c.rss_kib, c.wr_bytes) == (150, 7, 1024, 0)


def fill(platform, start: int, end: int, step: int = 15) -> None:
    rows = [
        {"instance_id": "i1", "ts": ts, "cpu_pct": float((ts // FIVE_MIN) % 2 * 100)}
        for ts in range(start, end, step)
    ]
    with platform.db.begin() as s:
        metrics.store(s, metrics.INSTANCES, rows)


def count(platform, resolution: int) -> int:
    with platform.db.begin() as s:
        return s.query(InstanceSample).filter_by(resolution=resolution).count()


def test_rollup_averages_each_finished_bucket_once(platform):
    fill(platform, NOW - 2 * HOUR, NOW)
    with platform.db.begin() as s:
        metrics.rollup(s, now=NOW + 120)
    assert count(platform, FIVE_MIN) == 24 and count(platform, HOUR) == 2
    with platform.db.begin() as s:
        assert metrics.rollup(s, now=NOW + 120) == 0  # nothing new: nothing twice
        five = metrics.series(
            s, metrics.INSTANCES, "i1", NOW - 2 * HOUR, NOW, ["cpu_pct"], RETENTION, now=NOW
        )
        hourly = s.query(InstanceSample).filter_by(resolution=HOUR).all()
    # buckets alternate 0 % and 100 %: each 5-minute average is one of them, each hour 50 %
    assert set(five.columns["cpu_pct"]) == {0.0, 100.0}
    assert [h.cpu_pct for h in hourly] == [pytest.approx(50.0)] * 2


def test_a_range_is_served_at_the_finest_resolution_kept_in_at_most_1500_points(platform):
    fill(platform, NOW - 2 * DAY, NOW)
    with platform.db.begin() as s:
        metrics.rollup(s, now=NOW + 120)
        hour = metrics.series(s, metrics.INSTANCES, "i1", NOW - HOUR, NOW, None, RETENTION, NOW)
        day = metrics.series(s, metrics.INSTANCES, "i1", NOW - DAY, NOW, None, RETENTION, NOW)
        # older than the raw samples are kept: 5-minute averages even for an hour
        old = metrics.series(
            s, metrics.INSTANCES, "i1", NOW - 2 * DAY, NOW - 2 * DAY + HOUR, None, RETENTION, NOW
        )
    assert (hour.resolution, len(hour.columns["ts"])) == (0, 240)
    assert set(hour.columns) == {"ts", *metrics.INSTANCE_METRICS}
    # a day of raw samples (5,760) is averaged into 1-minute buckets as it is read
    assert (day.resolution, day.step, len(day.columns["ts"])) == (0, 60.0, 1440)
    assert set(day.columns["cpu_pct"]) == {0.0, 100.0}  # whole minutes of one 5-minute half
    assert (old.resolution, len(old.columns["ts"])) == (FIVE_MIN, 12)


def test_pruning_keeps_each_resolution_for_its_time(platform):
    fill(platform, NOW - 3 * DAY, NOW, step=60)
    with platform.db.begin() as s:
        metrics.rollup(s, now=NOW + 120)
        metrics.prune(s, RETENTION, now=NOW)
        oldest_raw = s.query(InstanceSample).filter_by(resolution=0).order_by("ts").first()
    assert oldest_raw.ts >= NOW - DAY
    assert count(platform, FIVE_MIN) == 3 * 288  # kept 30 days
    short = Retention(15, 24, 1, 365)
    with platform.db.begin() as s:
        metrics.prune(s, short, now=NOW)
    assert count(platform, FIVE_MIN) == 288 and count(platform, HOUR) == 72


def test_bad_queries_are_refused(platform):
    with platform.db.begin() as s:
        for args, fragment in (
            ((NOW - HOUR, NOW, ["cpu"]), "unknown instance metric"),
            ((NOW, NOW - HOUR, None), "until must be after since"),
        ):
            with pytest.raises(metrics.BadRequest, match=fragment):
                metrics.series(s, metrics.INSTANCES, "i1", *args, RETENTION)


def test_a_host_reaching_its_allocation_limit_is_an_event(platform):
    from nubis.db.models import Host
    from nubis.db.models.monitoring import Event

    def set_allocated(mib: int) -> None:
        with platform.db.begin() as s:
            s.query(Host).update({"alloc_memory_mib": mib})

    platform.collector.collect_once()  # under the limit: nothing to say
    set_allocated(10**7)
    platform.collector.collect_once()
    platform.collector.collect_once()  # still over: said once
    set_allocated(0)
    platform.collector.collect_once()
    with platform.db.begin() as s:
        found = [
            (e.kind, e.severity, e.message)
            for e in s.query(Event).filter_by(kind="capacity.threshold").order_by(Event.created_at)
        ]
    assert [f[1] for f in found] == ["warning", "info"]
    assert "host fake memory allocation reached its cluster's limit" in found[0][2]
