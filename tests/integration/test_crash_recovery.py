"""The control plane killed in the middle of a task, then restarted: no leftovers."""

import httpx
import pytest

from tests.integration.server import READY, NubisServer, libvirt_leftovers

pytestmark = pytest.mark.integration


@pytest.fixture
def fresh(tmp_path):
    srv = NubisServer(tmp_path / "data", NUBIS_RECONCILE_INTERVAL_SECONDS="600")
    yield srv
    srv.stop()


def create(srv: NubisServer, name: str) -> dict:
    resp = srv.client.post(
        "/instances", json={"name": name, "image": "nubis-tiny", "flavor": "m1.tiny"}
    )
    assert resp.status_code == 202, resp.text
    return resp.json()


def create_dying(srv: NubisServer, name: str) -> None:
    """Ask for an instance from a server armed to die at a step of the create: the
    task may reach that step before the answer is written (the image already on the
    host), so the request can end with the connection instead of a 202."""
    try:
        create(srv, name)
    except httpx.HTTPError:
        pass


@pytest.mark.parametrize("step", ["disk", "define", "start"])
def test_killed_during_create_finishes_after_restart(fresh, step):
    fresh.start(NUBIS_FAULT_INJECT=f"instance.create:{step}")
    create_dying(fresh, f"crash-{step}")
    assert fresh.wait_exit() == 137  # the process died at that step
    fresh.start(NUBIS_FAULT_INJECT="")
    created = fresh.instance(f"crash-{step}")  # recorded before the task began
    tasks = fresh.client.get("/tasks", params={"resource_id": created["id"]}).json()["items"]
    assert [t["kind"] for t in tasks] == ["instance.create"]
    task = fresh.wait_task(tasks[0]["id"])
    assert task["status"] == "succeeded", task
    assert task["attempts"] == 2
    assert fresh.instance(created["id"])["status"] == "running"
    assert READY in fresh.wait_console(created["id"])
    resp = fresh.client.delete(f"/instances/{created['id']}")
    assert fresh.wait_task(resp.json()["task_id"])["status"] == "succeeded"
    assert libvirt_leftovers(created["id"]) == []


def test_failing_create_ends_in_error_with_nothing_left(fresh):
    fresh.start(NUBIS_FAULT_INJECT="instance.create:start:raise")
    created = create(fresh, "doomed")
    task = fresh.wait_task(created["task_id"])
    assert task["status"] == "failed" and "fault injected" in task["error"]
    inst = fresh.instance(created["id"])
    assert inst["status"] == "error" and "create failed" in inst["error"]
    # the disk and domain made before the failing step were removed
    assert libvirt_leftovers(created["id"]) == []
    resp = fresh.client.delete(f"/instances/{created['id']}")
    assert fresh.wait_task(resp.json()["task_id"])["status"] == "succeeded"
    assert fresh.client.get(f"/instances/{created['id']}").status_code == 404


def test_killed_during_delete_finishes_after_restart(fresh):
    fresh.start(NUBIS_FAULT_INJECT="instance.delete:disk")
    created = create(fresh, "half-deleted")
    assert fresh.wait_task(created["task_id"])["status"] == "succeeded"
    resp = fresh.client.delete(f"/instances/{created['id']}")
    assert resp.status_code == 202
    assert fresh.wait_exit() == 137
    fresh.start(NUBIS_FAULT_INJECT="")
    assert fresh.wait_task(resp.json()["task_id"])["status"] == "succeeded"
    assert fresh.client.get(f"/instances/{created['id']}").status_code == 404
    assert libvirt_leftovers(created["id"]) == []
