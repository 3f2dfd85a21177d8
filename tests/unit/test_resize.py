"""Resize requests: the sizes are counted by the quotas and claimed on the host in the
request's transaction, refused cleanly (nothing changed) when they do not fit, and
given back by a revert. The tasks themselves run against real QEMU guests in
tests/integration/test_resize.py."""

from sqlalchemy import select

from nubis.db.models import Host, Instance, Task
from tests.unit.test_api_contract import assert_error
from tests.unit.test_openstack_api import upload_image


def _host(platform) -> tuple[int, int, int]:
    with platform.db.begin() as s:
        host = s.scalars(select(Host).where(Host.name == "fake")).one()
        return host.alloc_vcpus, host.alloc_memory_mib, host.alloc_disk_gib


def _instance(platform, iid: str) -> Instance:
    with platform.db.begin() as s:
        inst = s.get(Instance, iid)
        s.expunge(inst)
        return inst


def _idle(platform, iid: str, status: str) -> None:
    """As if its last task had ended (the tasks do not run in these tests)."""
    with platform.db.begin() as s:
        inst = s.get(Instance, iid)
        inst.status, inst.task_state = status, None


def test_resize_is_claimed_checked_and_reverted(callers, platform, tmp_path):
    admin = callers["system_admin"]
    upload_image(admin, tmp_path, "img")
    for name, vcpus, memory, disk in (
        ("r.big", 2, 256, 2),
        ("r.huge-memory", 1, 60 * 1024, 2),
        ("r.many-cpus", 64, 128, 2),
    ):
        body = {"name": name, "vcpus": vcpus, "memory_mib": memory, "disk_gib": disk}
        assert admin.post("/flavors", json=body).status_code == 201
    created = admin.post(
        "/instances", json={"name": "r1", "image": "img", "flavor": "m1.tiny"}
    ).json()
    iid = created["id"]
    url = f"/instances/{iid}/actions"
    _idle(platform, iid, "paused")
    assert_error(admin.post(f"{url}/resize", json={"flavor": "r.big"}), 409, "is paused")
    _idle(platform, iid, "running")
    before = _host(platform)

    # refusals change nothing
    assert_error(admin.post(f"{url}/resize", json={"flavor": "nope"}), 404, "nope")
    assert_error(admin.post(f"{url}/resize", json={"flavor": "m1.tiny"}), 400, "already has")
    assert_error(admin.post(f"{url}/resize", json={}), 422, "flavor")
    assert_error(admin.post(f"{url}/resize", json={"flavor": "r.many-cpus"}), 409, "quota exceeded")
    assert_error(admin.post(f"{url}/resize", json={"flavor": "r.huge-memory"}), 409, "no room")
    assert_error(admin.post(f"{url}/confirm-resize"), 409, "no resize")
    assert_error(admin.post(f"{url}/revert-resize"), 409, "no resize")
    inst = _instance(platform, iid)
    assert (inst.vcpus, inst.memory_mib, inst.disk_gib, inst.task_state) == (1, 128, 1, None)
    assert inst.resize_from is None
    assert _host(platform) == before

    # accepted: recorded, claimed on the host and counted by the quota at once
    resp = admin.post(f"{url}/resize", json={"flavor": "r.big"})
    assert resp.status_code == 202, resp.text
    inst = _instance(platform, iid)
    assert (inst.vcpus, inst.memory_mib, inst.disk_gib, inst.task_state) == (2, 256, 2, "resizing")
    assert inst.resize_from["vcpus"] == 1 and inst.resize_from["memory_mib"] == 128
    assert _host(platform) == (before[0] + 1, before[1] + 128, before[2] + 1)
    usage = admin.get("/quotas").json()["quotas"]
    assert usage["vcpus"]["in_use"] == 2 and usage["memory_mib"]["in_use"] == 256
    with platform.db.begin() as s:
        task = s.get(Task, resp.json()["task_id"])
        assert (task.kind, task.params) == ("instance.resize", {"was_running": True})
    assert_error(admin.post(f"{url}/confirm-resize"), 409, "busy")  # while it runs
    _idle(platform, iid, "running")
    assert_error(admin.post(f"{url}/resize", json={"flavor": "m1.small"}), 409, "confirm or")
    assert_error(admin.post(f"{url}/resize", json={"flavor": "m1.tiny"}), 409, "confirm or")

    # reverted: the old sizes back, the claim given back
    resp = admin.post(f"{url}/revert-resize")
    assert resp.status_code == 202, resp.text
    inst = _instance(platform, iid)
    assert (inst.vcpus, inst.memory_mib, inst.disk_gib) == (1, 128, 1)
    assert inst.task_state == "reverting-resize"
    assert inst.resize_from is not None  # until the task has put the host back
    assert _host(platform) == before
