"""Two controllers (``nubis serve`` processes, each with its own data directory) on
one PostgreSQL database: the one running an instance's create is killed half-way;
the other takes the task over once its lease has passed and finishes it (once),
and takes over the HA monitor's lease too; with both up, a token, a console ticket
and a web session made on one work on the other; the host is watched by one of
them (what libvirt says of the instance is applied by that one only), and by the
other once it stops; nothing of the instance is left after its delete."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterator

import httpx
import libvirt
import pytest
from websockets.sync.client import connect

from tests.integration.controllers import (
    TAKEOVER,
    controller,
    controller_id,
    join,
    shared_database,
)
from tests.integration.server import READY, NubisServer, libvirt_leftovers
from tests.integration.vnc import Rfb, tls, ws_url

pytestmark = pytest.mark.integration


@pytest.fixture
def database() -> Iterator[str]:
    with shared_database("ctl") as url:
        yield url


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, page[:500]
    return found.group(1)


def across_controllers(one: NubisServer, other: NubisServer, instance_id: str) -> None:
    # an API token
    listed = httpx.get(
        f"{other.url}/api/v1/instances",
        headers={"Authorization": one.client.headers["Authorization"]},
        verify=other.verify(),
    )
    assert listed.status_code == 200 and instance_id in listed.text
    # a console ticket, opened through the other's websocket proxy
    ticket = one.client.post(f"/instances/{instance_id}/console").json()
    url = ws_url(other, ticket["websocket"], ticket["ticket"])
    with connect(url, subprotocols=["binary"], open_timeout=10, ssl=tls(other)) as ws:
        assert Rfb(ws).login(ticket["password"]) == 0
    # a web session (its cookie, and the CSRF token of one's pages, checked by the other)
    password = (one.data_dir / "admin-password").read_text().strip()
    with (
        httpx.Client(base_url=one.url, verify=one.verify()) as a,
        httpx.Client(base_url=other.url, verify=other.verify()) as b,
    ):
        login_csrf = csrf_of(a.get("/login").text)
        form = {"username": "admin", "password": password, "csrf_token": login_csrf}
        assert a.post("/login", data=form).status_code == 303
        b.cookies.set("nubis_session", a.cookies["nubis_session"])
        page = b.get("/dashboard")
        assert page.status_code == 200 and "admin" in page.text
        csrf = csrf_of(a.get("/dashboard").text)
        out = b.post("/logout", data={"csrf_token": csrf})
        assert out.status_code == 303, out.text  # accepted: the session ends
        assert a.get("/dashboard").status_code == 303  # on the first one too


def wait_watcher(server: NubisServer, expected: str) -> None:
    """Until the controller ``expected`` watches the one host, and no other does."""
    deadline = time.monotonic() + 3 * TAKEOVER
    while time.monotonic() < deadline:
        listed = server.client.get("/controllers").json()
        hosts = {c["id"]: c["hosts"] for c in listed if c["alive"]}
        if hosts.get(expected) == 1 and sum(hosts.values()) == 1:
            return
        time.sleep(0.2)
    raise AssertionError(f"{expected} does not watch the host: {listed}")


def watched_by_one(first: NubisServer, second: NubisServer, instance_id: str) -> NubisServer:
    """The instance stopped and started behind Nubis's back (virsh destroy, start):
    the controller that watches its host applies it (alone), and, once that one
    stops, the other. The controller left running."""
    # with two controllers and one host, the first by id watches it
    watcher, other = sorted((first, second), key=controller_id)
    wait_watcher(other, controller_id(watcher))
    conn = libvirt.open("qemu:///system")
    try:
        dom = conn.lookupByUUIDString(instance_id)
        dom.destroy()
        other.wait_status(instance_id, "stopped")
        said = f"instance {instance_id} is now stopped (reported by libvirt)"
        assert [s is watcher for s in (first, second) if said in s.log_path.read_text()] == [True]
        watcher.terminate()  # a clean stop: the other watches the host from its next tick
        wait_watcher(other, controller_id(other))
        dom.create()
        other.wait_status(instance_id, "running")
    finally:
        conn.close()
    return other


def test_a_dead_controllers_create_is_finished_by_another(tmp_path, database):
    key = secrets.token_urlsafe(32)
    first = controller(tmp_path / "a" / "data", database, key)
    second = controller(tmp_path / "b" / "data", database, key)
    try:
        first.start(NUBIS_FAULT_INJECT="instance.create:define")
        first_id = (first.data_dir / "controller-id").read_text().strip()
        resp = first.client.post(
            "/instances", json={"name": "handed-over", "image": "nubis-tiny", "flavor": "m1.tiny"}
        )
        assert resp.status_code == 202, resp.text
        created = resp.json()
        assert first.wait_exit() == 137  # killed at the task's define step
        died = time.monotonic()

        join(first, second)
        task = second.wait_task(created["task_id"])
        print(f"the create was finished by the second controller {time.monotonic() - died:.1f} s "
              f"after the first died (its start-up included)")  # fmt: skip
        assert (task["status"], task["attempts"]) == ("succeeded", 2), task
        assert second.instance(created["id"])["status"] == "running"
        assert READY in second.wait_console(created["id"])

        # the HA monitor's lease passes to the survivor; the dead one is shown dead
        deadline = time.monotonic() + 3 * TAKEOVER
        while time.monotonic() < deadline:
            listed = {c["id"]: c for c in second.client.get("/controllers").json()}
            me = next(c for c in listed.values() if c["this"])
            if "ha-monitor" in me["leads"] and not listed[first_id]["alive"]:
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"no takeover of the HA monitor: {listed}")
        assert listed[first_id]["running_tasks"] == 0 and listed[first_id]["leads"] == []

        # the first controller back: a token, a console ticket and a web session made on
        # one controller work on the other
        first.start(NUBIS_FAULT_INJECT="")
        across_controllers(first, second, created["id"])
        left = watched_by_one(first, second, created["id"])

        resp = left.client.delete(f"/instances/{created['id']}")
        assert left.wait_task(resp.json()["task_id"])["status"] == "succeeded"
        assert libvirt_leftovers(created["id"]) == []
    finally:
        second.stop()
        first.stop()
