"""Attack: a tenant points an alarm webhook at what only the server can reach (its
loopback, a cloud metadata address, private networks, a host's libvirt) to make
the server call it, and reads the delivery errors to map the network."""

import time

import pytest
from sqlalchemy import update

from nubis.db.models import Host
from nubis.db.models.monitoring import Notification
from nubis.services.monitoring import metrics
from tests.webhook_receiver import Receiver

INTERVAL = 15.0
MANAGEMENT = "93.184.216.34"  # a public address, given to a host as its libvirt URI


def rule(instance: str, url: str) -> dict:
    return {
        "name": "hook",
        "resource_type": "instance",
        "resource": instance,
        "metric": "cpu_pct",
        "threshold": 80,
        "duration_seconds": 15,
        "webhook_url": url,
    }


@pytest.fixture
def watched(client, platform, callers, tmp_path):
    """An instance of the member's project to watch."""
    from tests.unit.test_api_contract import qcow2

    member = callers["member"]
    image = member.upload("img", qcow2(tmp_path, "i.qcow2")).json()
    made = member.post("/instances", json={"name": "vm", "image": image["id"], "flavor": "m1.tiny"})
    assert made.status_code == 202, made.text
    with platform.db.begin() as s:  # a host with a public management address
        s.execute(update(Host).values(uri=f"qemu+tcp://{MANAGEMENT}/system"))
    return made.json()["id"]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/api/v1/hosts",  # the control plane itself
        "http://localhost/",  # a name that resolves to loopback
        "http://[::1]/",
        "http://169.254.169.254/latest/meta-data/",  # a cloud's metadata service
        "http://10.0.0.1/",
        "http://192.168.1.1/",
        "http://100.64.0.1/",  # shared address space
        "http://0.0.0.0/",
        f"http://{MANAGEMENT}:16509/",  # a host's libvirt
        "http://user:pw@example.invalid/",
        "gopher://127.0.0.1/",
    ],
)
def test_webhooks_into_the_platforms_networks_are_refused(callers, watched, url):
    member = callers["member"]
    refused = member.post("/alarms", json=rule(watched, url))
    assert refused.status_code == 400, refused.text
    assert member.get("/alarms").json()["total"] == 0


def test_allowed_networks_and_delivery_checks(client, platform, callers, watched):
    member, sysadmin = callers["member"], callers["system_admin"]
    with Receiver() as hook:
        assert member.post("/alarms", json=rule(watched, hook.url)).status_code == 400
        # only the system administrator changes the allow-list
        assert member.put("/webhook-allowlist", json={"networks": ["0.0.0.0/0"]}).status_code == 403
        bad = sysadmin.put("/webhook-allowlist", json={"networks": ["not-a-network"]})
        assert bad.status_code == 400
        allowed = sysadmin.put("/webhook-allowlist", json={"networks": ["127.0.0.1/32"]})
        assert allowed.json() == {"networks": ["127.0.0.1/32"]}
        made = member.post("/alarms", json=rule(watched, hook.url))
        assert made.status_code == 201, made.text
        alarm = made.json()
        # taken off the list again: the next delivery is checked again and not sent
        assert sysadmin.put("/webhook-allowlist", json={"networks": []}).status_code == 200
        fire(platform, watched)
        platform.notifier.deliver_due()
        assert hook.attempts == 0
        notes = member.get(f"/alarms/{alarm['id']}/notifications").json()
        assert [n["status"] for n in notes] == ["pending"]
        # what the owner reads of a failure says nothing of the network
        assert notes[0]["last_error"].startswith("not delivered")
        assert "127.0.0.1" not in notes[0]["last_error"]
        # allowed again: delivered, once
        sysadmin.put("/webhook-allowlist", json={"networks": ["127.0.0.1/32"]})
        with platform.db.begin() as s:
            s.execute(update(Notification).values(next_attempt_at=Notification.created_at))
        platform.notifier.deliver_due()
        assert hook.attempts == 1 and len(hook.received) == 1


def test_delivery_errors_are_generic(client, platform, callers, watched):
    """A closed port and an error page read the same to the rule's owner."""
    member, sysadmin = callers["member"], callers["system_admin"]
    sysadmin.put("/webhook-allowlist", json={"networks": ["127.0.0.1/32"]})
    with Receiver(fail=5) as hook:
        answering = member.post("/alarms", json=rule(watched, hook.url)).json()
        closed_url = "http://127.0.0.1:9/"  # nothing listens on the discard port
        second = rule(watched, closed_url) | {"name": "closed"}
        closed = member.post("/alarms", json=second).json()
        fire(platform, watched)
        platform.notifier.deliver_due()
        errors = {
            member.get(f"/alarms/{a['id']}/notifications").json()[0]["last_error"]
            for a in (answering, closed)
        }
        assert hook.attempts == 1
    assert len(errors) == 1, errors


def fire(platform, instance_id: str) -> None:
    """CPU samples over the threshold, evaluated: the rules go to alarm."""
    now = time.time()
    rows = [
        {"instance_id": instance_id, "ts": int(now - INTERVAL * (4 - i)), "cpu_pct": 99.0}
        for i in range(5)
    ]
    with platform.db.begin() as s:
        metrics.store(s, metrics.INSTANCES, rows)
    platform.alarms.evaluate_all(now, INTERVAL)
