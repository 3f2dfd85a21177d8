"""Monitoring on real guests: CPU of a guest made to burn it, disk and network
counters, host samples, and the events of what happened."""

import statistics
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from nubis.services.monitoring.notifier import signature
from tests.integration.server import serving
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.integration
INTERVAL = 2
BURN = "#!/bin/sh\nwhile :; do :; done\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    env = {"NUBIS_METRICS_INTERVAL_SECONDS": str(INTERVAL), "NUBIS_METERING_INTERVAL_SECONDS": "1"}
    with serving(tmp_path_factory, **env) as srv:
        yield srv


def create(server, name: str, **extra) -> dict:
    body = {"name": name, "image": "nubis-tiny", "flavor": "m1.tiny", **extra}
    resp = server.client.post("/instances", json=body)
    assert resp.status_code == 202, resp.text
    inst = resp.json()
    assert server.wait_task(inst["task_id"])["status"] == "succeeded"
    return inst


def recent() -> str:
    return (datetime.now(UTC) - timedelta(minutes=10)).isoformat()


def last_values(server, ref: str, metric: str, count: int) -> list[float]:
    params = {"metrics": metric, "since": recent()}
    resp = server.client.get(f"/instances/{ref}/metrics", params=params)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["resolution"] == 0 and body["units"] == {metric: "%" if "pct" in metric else "B/s"}
    return [v for v in body["series"][metric] if v is not None][-count:]


def test_a_busy_guest_shows_its_cpu_and_idle_one_does_not(server):
    busy = create(server, "burner", user_data=BURN)
    idle = create(server, "idler")
    try:
        server.wait_console(busy["id"])
        server.wait_console(idle["id"])
        # the loop starts after boot: within a few intervals the busy guest is near 100 %
        deadline = time.monotonic() + 20 * INTERVAL
        while time.monotonic() < deadline:
            values = last_values(server, busy["id"], "cpu_pct", 2)
            if len(values) == 2 and min(values) > 80:
                break
            time.sleep(INTERVAL / 2)
        else:
            raise AssertionError(f"busy guest's CPU: {values}")
        # the idle guest over the same 10 s: one 2-second sample of an emulated guest
        # can spike when the host's cores are busy, so its median is what is judged
        time.sleep(3 * INTERVAL)
        idle_cpu = last_values(server, idle["id"], "cpu_pct", 5)
        busy_cpu = last_values(server, busy["id"], "cpu_pct", 5)
        assert len(idle_cpu) == 5 and statistics.median(idle_cpu) < 50, idle_cpu
        assert statistics.median(busy_cpu) > 80, busy_cpu
        series = server.client.get(
            f"/instances/{busy['id']}/metrics", params={"since": recent()}
        ).json()["series"]
        assert max(v or 0 for v in series["disk_read_bps"]) > 0  # it read its disc at boot
        assert max(v or 0 for v in series["memory_mib"]) > 10
        assert len(series["ts"]) == len(series["cpu_pct"]) >= 3

        host = server.client.get("/hosts/local/metrics", params={"since": recent()}).json()
        host = host["series"]
        assert host["cpu_pct"][-1] is not None and 0 <= host["cpu_pct"][-1] <= 100
        assert host["memory_total_mib"][-1] > host["memory_used_mib"][-1] > 0
        assert host["memory_allocated_pct"][-1] > 0  # two guests are placed there

        # what happened is in the event stream, newest first
        server.act(idle["id"], "stop")
        events = server.client.get(
            "/events", params={"resource_id": idle["id"], "sort": "-created_at"}
        ).json()["items"]
        kinds = [(e["kind"], e["message"]) for e in events]
        assert kinds[0] == ("task.succeeded", "instance.stop succeeded for instance idler")
        assert ("task.succeeded", "instance.create succeeded for instance idler") in kinds
    finally:
        for inst in (busy, idle):
            resp = server.client.delete(f"/instances/{inst['id']}")
            assert server.wait_task(resp.json()["task_id"])["status"] == "succeeded"


def test_a_guest_that_powers_itself_off_is_an_event(server):
    inst = create(server, "quitter", user_data="#!/bin/sh\nsleep 1\npoweroff -f\n")
    try:
        server.wait_status(inst["id"], "stopped", timeout=120)
        events = server.client.get("/events", params={"kind": "instance.state"}).json()
        mine = [e for e in events["items"] if e["resource_id"] == inst["id"]]
        assert [e["message"] for e in mine] == [
            "instance quitter is now stopped (reported by libvirt)"
        ]
    finally:
        resp = server.client.delete(f"/instances/{inst['id']}")
        assert server.wait_task(resp.json()["task_id"])["status"] == "succeeded"


def test_a_cpu_alarm_fires_once_and_clears_when_the_load_stops(server):
    # the guest burns CPU for a while after boot, then stops; it says both on its console
    burn_then_rest = (
        "#!/bin/sh\nsh -c 'while :; do :; done' &\necho BURN-START\n"
        "sleep 40\nkill $!\necho BURN-END\n"
    )
    inst = create(server, "spiky", user_data=burn_then_rest)
    try:
        # the rule is made once the loop runs: the guest's boot burns CPU too, and with
        # a quiet moment after it, that made an alarm of its own (seen in CI)
        server.wait_console(inst["id"], marker="BURN-START")
        # the receiver is on loopback: the system administrator allows that address
        allow = server.client.put("/webhook-allowlist", json={"networks": ["127.0.0.1/32"]})
        assert allow.status_code == 200, allow.text
        with Receiver() as hook:
            rule = {
                "name": "spiky-cpu",
                "resource_type": "instance",
                "resource": "spiky",
                "metric": "cpu_pct",
                "comparator": "gt",
                "threshold": 80,
                "duration_seconds": 3 * INTERVAL,
                # clears below 20 %: an idle guest is at 1-3 %, while a busy host
                # starves the burning guest's TCG thread to 45-58 % for seconds (seen
                # in CI): with a margin of 20 that cleared the alarm while the loop
                # still ran, and it fired again
                "hysteresis": 60,
                "webhook_url": hook.url,
            }
            made = server.client.post("/alarms", json=rule)
            assert made.status_code == 201, made.text
            alarm = made.json()
            deadline = time.monotonic() + 180
            seen = []
            while time.monotonic() < deadline:
                now = server.client.get(f"/alarms/{alarm['id']}").json()["state"]
                if not seen or seen[-1] != now:
                    seen.append(now)
                if now == "ok" and "alarm" in seen:
                    break
                time.sleep(INTERVAL / 2)
            assert seen[-2:] == ["alarm", "ok"], seen
            assert "BURN-END" in server.console(inst["id"])  # it cleared once the load stopped
            deadline = time.monotonic() + 20
            while len(hook.received) < 2 and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(2 * INTERVAL)  # nothing more may come
            docs = [h["json"] for h in hook.received]
            # one message per transition into or out of alarm, in order, no more
            changes = server.client.get(
                "/events", params={"resource_id": inst["id"], "sort": "created_at"}
            ).json()["items"]
            moves = [
                e["message"].split(": ", 1)[1].split(" (")[0].split(" -> ")
                for e in changes
                if e["kind"].startswith("alarm.")
            ]
            alarm_moves = [tuple(m) for m in moves if "alarm" in m]
            assert [(d["previous_state"], d["state"]) for d in docs] == alarm_moves
            assert [m for m in alarm_moves if m[1] == "alarm"] == [alarm_moves[-2]]  # once
            assert alarm_moves[-1] == ("alarm", "ok")
            assert docs[-1]["value"] <= 60
            assert max(d["value"] for d in docs if d["state"] == "alarm") > 80
            for h in hook.received:
                expected = signature(alarm["webhook_secret"], h["raw"])
                assert h["headers"]["X-Nubis-Signature"] == expected
    finally:
        resp = server.client.delete(f"/instances/{inst['id']}")
        assert server.wait_task(resp.json()["task_id"])["status"] == "succeeded"


def test_a_run_of_known_length_is_billed_to_the_cent(server):
    flavor = {"name": "meter.tiny", "vcpus": 1, "memory_mib": 128, "disk_gib": 1}
    assert server.client.post("/flavors", json=flavor).status_code == 201
    price = Decimal("3.600000")  # per hour: a tenth of a cent per second
    rate = {"metric": "instance.hours", "dimension": "meter.tiny", "price": str(price)}
    assert server.client.put("/rates", json=rate).status_code == 200
    inst = create(server, "metered", flavor="meter.tiny")
    try:
        started = datetime.fromisoformat(
            server.client.get(f"/instances/{inst['id']}").json()["updated_at"]
        )
        time.sleep(20)
        stop = server.client.post(f"/instances/{inst['id']}/actions/stop")
        task = server.wait_task(stop.json()["task_id"])
        stopped = datetime.fromisoformat(task["finished_at"])
        time.sleep(3)  # a sweep after the stop: nothing more is added
        ran = (stopped - started).total_seconds() / 3600
        report = server.client.get("/usage/report").json()
        lines = [x for x in report["lines"] if x["dimension"] == "meter.tiny"]
        assert len(lines) == 1
        line = lines[0]
        assert abs(line["quantity"] - ran) * 3600 <= 2.5, (line["quantity"] * 3600, ran * 3600)
        assert Decimal(line["unit_price"]) == price
        expected = (Decimal(repr(line["quantity"])) * price).quantize(Decimal("0.01"))
        assert Decimal(line["cost"]) == expected
        assert Decimal(report["total"]) == sum(Decimal(x["cost"]) for x in report["lines"])
        later = server.client.get("/usage/report").json()
        assert [x for x in later["lines"] if x["dimension"] == "meter.tiny"] == lines
    finally:
        resp = server.client.delete(f"/instances/{inst['id']}")
        assert server.wait_task(resp.json()["task_id"])["status"] == "succeeded"
