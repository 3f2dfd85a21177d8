"""Alarm rules on a real database: states with hysteresis and missing data, the
API's checks, and webhooks delivered to a real HTTP receiver, signed, with retries."""

import socket
import time

import pytest
from fastapi.testclient import TestClient

from nubis.api.app import create_app
from nubis.db.models import Host, Instance, Project
from nubis.db.models.monitoring import Notification
from nubis.services.monitoring import metrics
from nubis.services.monitoring.notifier import signature
from tests.webhook_receiver import Receiver

INTERVAL = 15.0


@pytest.fixture
def api(platform):
    """The API as the system administrator (bootstrap admin)."""
    with TestClient(create_app(platform, manage_lifecycle=False)) as c:
        password = (platform.settings.data_dir / "admin-password").read_text().strip()
        token = c.post("/api/v1/auth/tokens", json={"username": "admin", "password": password})
        c.headers["Authorization"] = f"Bearer {token.json()['token']}"
        yield c


@pytest.fixture
def instance_id(platform):
    with platform.db.begin() as s:
        project = s.query(Project).filter_by(name="admin").one()
        host = s.query(Host).one()
        inst = Instance(
            name="watched",
            project_id=project.id,
            host_id=host.id,
            vcpus=1,
            memory_mib=128,
            disk_gib=1,
            status="running",
        )
        s.add(inst)
        s.flush()
        return inst.id


def samples(platform, instance_id: str, values: list[float], end: float) -> None:
    rows = [
        {
            "instance_id": instance_id,
            "ts": int(end - INTERVAL * (len(values) - 1 - i)),
            "cpu_pct": v,
        }
        for i, v in enumerate(values)
    ]
    with platform.db.begin() as s:
        metrics.store(s, metrics.INSTANCES, rows)


def make_rule(api, instance_id: str, **extra) -> dict:
    body = {
        "name": "cpu-high",
        "resource_type": "instance",
        "resource": instance_id,
        "metric": "cpu_pct",
        "comparator": "gt",
        "threshold": 90,
        "duration_seconds": 60,
        "hysteresis": 10,
        **extra,
    }
    resp = api.post("/api/v1/alarms", json=body)
    assert resp.status_code == 201, resp.text
    return resp.json()


def state(api, rule: dict) -> str:
    return api.get(f"/api/v1/alarms/{rule['id']}").json()["state"]


def test_states_follow_the_samples_with_hysteresis(api, platform, instance_id):
    rule = make_rule(api, instance_id)
    assert rule["state"] == "insufficient_data" and rule["webhook_secret"] is None
    now = time.time()
    samples(platform, instance_id, [95, 97, 96, 99, 98], now)
    platform.alarms.evaluate_all(now, INTERVAL)
    assert state(api, rule) == "alarm"
    # below the threshold but within the hysteresis: still in alarm
    samples(platform, instance_id, [85, 84, 86, 85, 85], now + 75)
    platform.alarms.evaluate_all(now + 75, INTERVAL)
    assert state(api, rule) == "alarm"
    samples(platform, instance_id, [20, 10, 12, 11, 10], now + 150)
    platform.alarms.evaluate_all(now + 150, INTERVAL)
    assert state(api, rule) == "ok"
    # no fresh samples (the instance stopped): insufficient data, not ok
    platform.alarms.evaluate_all(now + 600, INTERVAL)
    assert state(api, rule) == "insufficient_data"
    kinds = [
        e["kind"]
        for e in api.get(
            "/api/v1/events", params={"resource_id": instance_id, "sort": "created_at"}
        ).json()["items"]
    ]
    assert kinds == ["alarm.alarm", "alarm.ok", "alarm.insufficient_data"]


def test_webhooks_are_signed_sent_once_per_transition_and_retried(api, platform, instance_id):
    # the receiver is on loopback: the system administrator allows that network
    allowed = api.put("/api/v1/webhook-allowlist", json={"networks": ["127.0.0.0/8"]})
    assert allowed.json() == {"networks": ["127.0.0.0/8"]}
    with Receiver(fail=2) as hook:
        rule = make_rule(api, instance_id, webhook_url=hook.url)
        secret = rule["webhook_secret"]
        now = time.time()
        samples(platform, instance_id, [95, 96, 97, 98, 99], now)
        platform.alarms.evaluate_all(now, INTERVAL)
        platform.alarms.evaluate_all(now + 1, INTERVAL)  # no change: nothing more
        platform.notifier.deliver_due()  # answered 500: kept for a retry
        assert hook.received == [] and hook.attempts == 1
        with platform.db.begin() as s:
            s.query(Notification).update({"next_attempt_at": Notification.created_at})
        platform.notifier.deliver_due()
        with platform.db.begin() as s:
            s.query(Notification).update({"next_attempt_at": Notification.created_at})
        platform.notifier.deliver_due()
        assert hook.attempts == 3 and len(hook.received) == 1
        got = hook.received[0]
        assert got["headers"]["X-Nubis-Signature"] == signature(secret, got["raw"])
        doc = got["json"]
        assert (doc["previous_state"], doc["state"]) == ("insufficient_data", "alarm")
        assert doc["alarm"]["name"] == "cpu-high" and doc["value"] == pytest.approx(97)
        assert got["headers"]["X-Nubis-Delivery"] == doc["id"]
        notes = api.get(f"/api/v1/alarms/{rule['id']}/notifications").json()
        assert [(n["status"], n["attempts"]) for n in notes] == [("sent", 3)]

        # silenced: the transition is followed but not sent
        resp = api.post(f"/api/v1/alarms/{rule['id']}/actions/silence", json={"seconds": 600})
        assert resp.status_code == 200 and resp.json()["silenced_until"]
        samples(platform, instance_id, [10, 10, 10, 10, 10], now + 75)
        platform.alarms.evaluate_all(now + 75, INTERVAL)
        platform.notifier.deliver_due()
        assert state(api, rule) == "ok" and len(hook.received) == 1


def test_acknowledge_only_an_alarm(api, platform, instance_id):
    rule = make_rule(api, instance_id)
    resp = api.post(f"/api/v1/alarms/{rule['id']}/actions/acknowledge")
    assert resp.status_code == 400 and "nothing to acknowledge" in resp.text
    now = time.time()
    samples(platform, instance_id, [99] * 5, now)
    platform.alarms.evaluate_all(now, INTERVAL)
    acked = api.post(f"/api/v1/alarms/{rule['id']}/actions/acknowledge").json()
    assert acked["state"] == "alarm" and acked["acknowledged_at"]


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"metric": "cpu"}, "metric must be one of"),
        ({"comparator": "eq"}, "comparator must be one of"),
        ({"aggregation": "p99"}, "aggregation must be one of"),
        ({"duration_seconds": 0}, "duration_seconds must be between"),
        ({"hysteresis": -1}, "hysteresis must not be negative"),
        ({"webhook_url": "file:///etc/passwd"}, "webhook_url must be"),
        ({"email": "ops@example.com"}, "smtp_host"),
        ({"resource": "no-such-vm"}, "not found"),
        ({"resource_type": "volume"}, "resource_type must be"),
        ({"name": "bad name"}, "alarm name"),
    ],
)
def test_bad_rules_are_refused_and_nothing_is_made(api, instance_id, change, fragment):
    body = {
        "name": "r",
        "resource_type": "instance",
        "resource": instance_id,
        "metric": "cpu_pct",
        "threshold": 90,
        **change,
    }
    resp = api.post("/api/v1/alarms", json=body)
    assert resp.status_code in (400, 404), resp.text
    assert fragment in resp.json()["error"]["message"]
    assert api.get("/api/v1/alarms").json()["total"] == 0


def test_only_the_system_administrator_watches_hosts(callers):
    body = {"name": "h", "resource_type": "host", "resource": "fake", "metric": "host_down"}
    refused = callers["admin"].post("/alarms", json=body)
    assert refused.status_code == 403
    made = callers["system_admin"].post("/alarms", json=body)
    assert made.status_code == 201, made.text
    assert (made.json()["comparator"], made.json()["threshold"]) == ("ge", 1.0)
    assert callers["member"].get(f"/alarms/{made.json()['id']}").status_code == 404


def test_a_rule_goes_with_its_instance(api, platform, instance_id):
    rule = make_rule(api, instance_id)
    with platform.db.begin() as s:
        s.query(Instance).filter_by(id=instance_id).delete()
    platform.alarms.evaluate_all(time.time(), INTERVAL)
    assert api.get(f"/api/v1/alarms/{rule['id']}").status_code == 404
    kinds = [
        e["kind"]
        for e in api.get("/api/v1/events", params={"kind": "alarm.removed"}).json()["items"]
    ]
    assert kinds == ["alarm.removed"]


def test_alarm_e_mails_go_through_smtp(api, platform, instance_id):
    from aiosmtpd.controller import Controller

    from nubis.services.monitoring.notifier import Notifier, Smtp

    class Inbox:
        def __init__(self) -> None:
            self.messages: list = []

        async def handle_DATA(self, _server, _session, envelope):  # noqa: N802 (aiosmtpd's name)
            self.messages.append(envelope)
            return "250 OK"

    inbox = Inbox()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    smtp = Controller(inbox, hostname="127.0.0.1", port=port)
    smtp.start()
    try:
        platform.alarms.smtp_configured = True
        rule = make_rule(api, instance_id, email="ops@example.com")
        now = time.time()
        samples(platform, instance_id, [99] * 5, now)
        platform.alarms.evaluate_all(now, INTERVAL)
        mailer = Notifier(platform.db, platform.box, Smtp("127.0.0.1", port, "nubis@test"))
        assert mailer.deliver_due() == 1
        (mail,) = inbox.messages
        assert mail.mail_from == "nubis@test" and mail.rcpt_tos == ["ops@example.com"]
        text = mail.content.decode()
        assert "Subject: [Nubis] alarm cpu-high is alarm" in text and rule["id"] in text
    finally:
        smtp.stop()
