"""A real VM through its whole life, through the REST API, on the local libvirtd."""

import libvirt
import pytest

from tests.integration.server import READY, libvirt_leftovers

pytestmark = pytest.mark.integration


def test_boot_stop_start_reboot_pause_resume_delete(server):
    resp = server.client.post(
        "/instances", json={"name": "life", "image": "nubis-tiny", "flavor": "m1.tiny"}
    )
    assert resp.status_code == 202, resp.text
    created = resp.json()
    iid = created["id"]
    assert created["status"] == "building"
    task = server.wait_task(created["task_id"])
    assert task["status"] == "succeeded", task
    assert server.instance(iid)["status"] == "running"
    assert READY in server.wait_console(iid, 1)

    # the domain really is what Nubis says: a qemu domain with a linked-clone disk
    conn = libvirt.open("qemu:///system")
    try:
        dom = conn.lookupByUUIDString(iid)
        assert dom.isActive() == 1
        xml = dom.XMLDesc(0)
        assert "type='qemu'" in xml and f"nubis-{iid}-root" in xml
        vol = conn.storagePoolLookupByName("nubis-disks").storageVolLookupByName(
            f"nubis-{iid}-root"
        )
        assert "<backingStore>" in vol.XMLDesc(0)
    finally:
        conn.close()

    server.act(iid, "stop")  # graceful: the guest answers the ACPI power button
    assert server.instance(iid)["status"] == "stopped"
    server.act(iid, "start")
    assert server.instance(iid)["status"] == "running"
    server.wait_console(iid, 2)
    server.act(iid, "reboot")
    server.wait_console(iid, 3)
    assert server.instance(iid)["status"] == "running"
    server.act(iid, "hard-reboot")  # a reset: the guest boots again without shutting down
    server.wait_console(iid, 4)
    assert server.instance(iid)["status"] == "running"
    server.act(iid, "pause")
    assert server.instance(iid)["status"] == "paused"
    server.act(iid, "resume")
    assert server.instance(iid)["status"] == "running"
    server.act(iid, "force-stop")
    assert server.instance(iid)["status"] == "stopped"

    resp = server.client.delete(f"/instances/{iid}")
    assert resp.status_code == 202
    assert server.wait_task(resp.json()["task_id"])["status"] == "succeeded"
    assert server.client.get(f"/instances/{iid}").status_code == 404
    assert libvirt_leftovers(iid) == []


def test_actions_in_the_wrong_state_are_conflicts(server):
    created = server.client.post(
        "/instances", json={"name": "guarded", "image": "nubis-tiny", "flavor": "m1.tiny"}
    ).json()
    server.wait_task(created["task_id"])
    iid = created["id"]
    for action in ("start", "resume"):
        resp = server.client.post(f"/instances/{iid}/actions/{action}")
        assert resp.status_code == 409, resp.text
        assert "running" in resp.json()["error"]["message"]
    resp = server.client.delete(f"/instances/{iid}")
    assert server.wait_task(resp.json()["task_id"])["status"] == "succeeded"
    assert libvirt_leftovers(iid) == []
