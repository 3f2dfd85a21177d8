"""Metering on a real database: usage hour by hour from what exists at each sweep,
the rating table, and monthly reports that add up to the cent."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from nubis.db.models import Flavor, Host, Image, Instance, Project, StoragePool, Volume
from nubis.services.core.errors import ServiceError
from nubis.services.monitoring import metering

T0 = datetime(2026, 11, 3, 9, 40, tzinfo=UTC)


@pytest.fixture
def world(platform):
    with platform.db.begin() as s:
        project = s.query(Project).filter_by(name="admin").one()
        tiny = s.query(Flavor).filter_by(name="m1.tiny").one()
        host = s.query(Host).one()
        inst = Instance(
            name="metered",
            project_id=project.id,
            host_id=host.id,
            flavor_id=tiny.id,
            vcpus=1,
            memory_mib=128,
            disk_gib=1,
            status="running",
        )
        s.add(inst)
        s.add(Image(name="mine", project_id=project.id, status="active", size=2 * metering.GIB))
        s.flush()
        # the platform's own first sweep started the clock now: these tests keep their own
        s.query(metering.MeteringMark).delete()
        return {"project": project.id, "instance": inst.id}


def sweep_at(platform, when: datetime) -> None:
    with platform.db.begin() as s:
        metering.sweep(s, now=when)


def test_usage_is_split_by_hour_and_follows_state(platform, world):
    sweep_at(platform, T0)  # starts the clock
    sweep_at(platform, T0 + timedelta(minutes=50))  # 09:40 -> 10:30: 20 min + 30 min
    with platform.db.begin() as s:
        inst = s.get(Instance, world["instance"])
        inst.status = "stopped"
    sweep_at(platform, T0 + timedelta(minutes=80))  # stopped: no instance hours
    with platform.db.begin() as s:
        rows = {
            (r.metric, r.period_start.hour): round(r.quantity, 6)
            for r in s.query(metering.UsageRecord).all()
        }
    assert rows[("instance.hours", 9)] == pytest.approx(20 / 60)
    assert rows[("instance.hours", 10)] == pytest.approx(30 / 60)
    assert ("instance.hours", 11) not in rows
    assert rows[("image.gib_hours", 9)] == pytest.approx(2 * 20 / 60)
    assert rows[("image.gib_hours", 10)] == pytest.approx(2 * 60 / 60)  # 10:00 to 11:00
    assert ("image.gib_hours", 11) not in rows  # the last sweep ended at 11:00 sharp


def test_report_rates_each_line_and_adds_to_the_cent(platform, world):
    with platform.db.begin() as s:
        metering.set_rate(s, "instance.hours", "", "0.020000", "EUR")
        metering.set_rate(s, "instance.hours", "m1.tiny", "0.013333", "EUR")
        metering.set_rate(s, "image.gib_hours", "", "0.000150", "EUR")
        pool = StoragePool(name="p", kind="dir", path="/var/tmp/p")
        s.add(pool)
        s.flush()
        s.add(
            Volume(
                name="v",
                project_id=world["project"],
                pool_id=pool.id,
                size_gib=10,
                format="qcow2",
                provisioning="thin",
                status="available",
            )
        )
    sweep_at(platform, T0)
    sweep_at(platform, T0 + timedelta(hours=30, minutes=15))  # 30.25 hours of everything
    with platform.db.begin() as s:
        rep = metering.report(s, world["project"], "2026-11")
    lines = {(line.metric, line.dimension): line for line in rep.lines}
    tiny = lines[("instance.hours", "m1.tiny")]
    assert tiny.quantity == pytest.approx(30.25) and tiny.unit_price == Decimal("0.013333")
    assert tiny.cost == Decimal("0.40")  # 30.25 x 0.013333 = 0.40332...
    image = lines[("image.gib_hours", "")]
    assert image.cost == Decimal("0.01")  # 60.5 GiB-h x 0.00015 = 0.009075
    volume = lines[("volume.gib_hours", "")]
    assert volume.quantity == pytest.approx(302.5) and volume.unit_price is None
    assert volume.cost == Decimal("0.00")  # no rate: not charged
    assert rep.total == Decimal("0.41") and rep.currency == "EUR"
    assert [d for d, _ in rep.daily] == ["2026-11-03", "2026-11-04"]
    csv_text = metering.report_csv(rep)
    assert csv_text.splitlines()[-1].endswith("total,,,,,0.41,EUR")
    with platform.db.begin() as s:
        assert metering.report(s, world["project"], "2026-10").lines == []


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("cpu.hours", "", "1", "EUR"), "metric must be one of"),
        (("volume.gib_hours", "m1.tiny", "1", "EUR"), "only instance.hours"),
        (("instance.hours", "m9.huge", "1", "EUR"), "not found"),
        (("instance.hours", "", "-1", "EUR"), "non-negative"),
        (("instance.hours", "", "0.0000001", "EUR"), "at most 6 decimals"),
        (("instance.hours", "", "abc", "EUR"), "not a number"),
        (("instance.hours", "", "1", "euro"), "three-letter"),
    ],
)
def test_bad_rates_are_refused(platform, args, fragment):
    with platform.db.begin() as s, pytest.raises(ServiceError) as err:
        metering.set_rate(s, *args)
    assert fragment in str(err.value)
    with platform.db.begin() as s:
        assert s.query(metering.Rate).count() == 0


def test_rates_and_reports_through_the_api(callers):
    admin, member, reader = callers["system_admin"], callers["member"], callers["reader"]
    body = {"metric": "instance.hours", "price": "0.05", "currency": "EUR"}
    assert member.put("/rates", json=body).status_code == 403
    made = admin.put("/rates", json=body)
    assert made.status_code == 200, made.text
    assert [r["price"] for r in reader.get("/rates").json()] == ["0.050000"]
    mixed = admin.put("/rates", json={**body, "metric": "volume.gib_hours", "currency": "USD"})
    assert mixed.status_code == 400 and "one currency" in mixed.text
    rep = member.get("/usage/report", params={"month": "2026-11"})
    assert rep.status_code == 200 and rep.json()["project"] == "p1"
    assert rep.json()["total"] == "0.00"
    csv = member.get("/usage/report", params={"month": "2026-11", "format": "csv"})
    assert csv.headers["content-type"].startswith("text/csv")
    assert member.get("/usage/report", params={"project": "p2"}).status_code == 404
    assert member.get("/usage/report", params={"month": "2026-13"}).status_code == 400
