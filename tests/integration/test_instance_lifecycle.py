"""A real VM through its whole life, through the REST API, on the local libvirtd."""

import libvirt
import pytest

from tests.integration.guest import wait_uptime
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

    # suspend: the guest's memory is written to disk and its QEMU ends; resume brings
    # the same guest back where it was (its uptime goes on, it does not boot again)
    booted = server.console(iid).count(READY)
    before = wait_uptime(server, iid, 1)
    server.act(iid, "suspend")
    assert server.instance(iid)["status"] == "suspended"
    assert _saved(iid) == (False, True)  # no QEMU, a managed save image
    server.act(iid, "resume")
    assert server.instance(iid)["status"] == "running"
    assert _saved(iid) == (True, False)
    after = wait_uptime(server, iid, before + 5)
    assert after < before + 60  # the same guest, not a new boot counting from zero
    assert server.console(iid).count(READY) == booted
    # a stop discards the saved memory: the next start boots afresh
    server.act(iid, "suspend")
    server.act(iid, "stop")
    assert server.instance(iid)["status"] == "stopped"
    assert _saved(iid) == (False, False)
    server.act(iid, "start")
    server.wait_console(iid, booted + 1)
    server.act(iid, "force-stop")
    assert server.instance(iid)["status"] == "stopped"

    resp = server.client.delete(f"/instances/{iid}")
    assert resp.status_code == 202
    assert server.wait_task(resp.json()["task_id"])["status"] == "succeeded"
    assert server.client.get(f"/instances/{iid}").status_code == 404
    assert libvirt_leftovers(iid) == []


def _saved(iid: str) -> tuple[bool, bool]:
    """Is the domain's QEMU running, has it a managed save image (libvirt's word)?"""
    conn = libvirt.open("qemu:///system")
    try:
        dom = conn.lookupByUUIDString(iid)
        return bool(dom.isActive()), bool(dom.hasManagedSaveImage(0))
    finally:
        conn.close()


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
    # a suspended instance can be resumed, stopped or deleted, nothing else
    server.act(iid, "suspend")
    for action in ("pause", "reboot", "suspend", "start"):
        resp = server.client.post(f"/instances/{iid}/actions/{action}")
        assert resp.status_code == 409, resp.text
        assert "is suspended" in resp.json()["error"]["message"]
    assert server.instance(iid)["status"] == "suspended"
    assert _saved(iid) == (False, True)
    # deleting it removes the saved memory with the domain
    resp = server.client.delete(f"/instances/{iid}")
    assert server.wait_task(resp.json()["task_id"])["status"] == "succeeded"
    assert libvirt_leftovers(iid) == []
