"""Console tickets are refused when expired, used, unknown or for another instance,
before anything is connected (real guests: tests/integration/test_console.py)."""

import hashlib
from datetime import timedelta

import pytest
from starlette.websockets import WebSocketDisconnect

from nubis.api.routers.console import TICKET_REFUSED
from nubis.db.models import ConsoleTicket, User, utcnow
from tests.unit.test_api_contract import qcow2


@pytest.fixture
def instance_id(callers, tmp_path):
    member = callers["member"]
    image = member.post(
        "/images",
        params={"name": "c-img"},
        content=qcow2(tmp_path, "c.qcow2"),
        headers={"Content-Type": "application/octet-stream"},
    ).json()
    resp = member.post("/instances", json={"name": "c", "image": image["id"], "flavor": "m1.tiny"})
    assert resp.status_code == 202, resp.text
    return resp.json()["id"]


def add_ticket(platform, instance_id: str, ticket: str, expires_in: float, used: bool = False):
    with platform.db.begin() as s:
        user = s.query(User).filter_by(username="p1-member").one()
        s.add(
            ConsoleTicket(
                ticket_hash=hashlib.sha256(ticket.encode()).hexdigest(),
                instance_id=instance_id,
                user_id=user.id,
                expires_at=utcnow() + timedelta(seconds=expires_in),
                used_at=utcnow() if used else None,
            )
        )


def close_code(client, instance_id: str, ticket: str) -> int:
    with pytest.raises(WebSocketDisconnect) as info:
        with client.websocket_connect(
            f"/api/v1/console/{instance_id}/websocket?ticket={ticket}"
        ) as ws:
            ws.receive_bytes()
    return info.value.code


def test_refused_tickets(client, platform, callers, instance_id):
    add_ticket(platform, instance_id, "expired", -1)
    add_ticket(platform, instance_id, "used", 60, used=True)
    add_ticket(platform, instance_id, "good", 60)
    assert close_code(client, instance_id, "expired") == TICKET_REFUSED
    assert close_code(client, instance_id, "used") == TICKET_REFUSED
    assert close_code(client, instance_id, "nothing-like-it") == TICKET_REFUSED
    assert close_code(client, instance_id, "") == TICKET_REFUSED
    other = "00000000-0000-0000-0000-000000000000"
    assert close_code(client, other, "good") == TICKET_REFUSED


def test_no_ticket_for_an_instance_that_does_not_run(callers, instance_id):
    resp = callers["member"].post(f"/instances/{instance_id}/console")
    assert resp.status_code == 409 and "no console" in resp.text
    assert callers["reader"].post(f"/instances/{instance_id}/console").status_code == 403
    assert callers["p2-member"].post(f"/instances/{instance_id}/console").status_code == 404
