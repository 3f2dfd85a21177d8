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


def test_boot_from_an_uploaded_iso_onto_a_blank_disk(server, tmp_path):
    from nubis.images.tinyimage import build_tiny_iso

    iso = build_tiny_iso(tmp_path / "tiny.iso")
    with open(iso, "rb") as fh:
        resp = server.client.post(
            "/images",
            params={"name": "tiny-iso"},
            content=fh,
            headers={"Content-Type": "application/octet-stream"},
        )
    assert resp.status_code == 201, resp.text
    image = resp.json()
    assert image["disk_format"] == "iso"
    created = server.client.post(
        "/instances", json={"name": "from-iso", "image": "tiny-iso", "flavor": "m1.tiny"}
    ).json()
    assert server.wait_task(created["task_id"])["status"] == "succeeded"
    iid = created["id"]
    assert READY in server.wait_console(iid)
    conn = libvirt.open("qemu:///system")
    try:
        xml = conn.lookupByUUIDString(iid).XMLDesc(0)
        vol = conn.storagePoolLookupByName("nubis-disks").storageVolLookupByName(
            f"nubis-{iid}-root"
        )
        assert "device='cdrom'" in xml
        assert "<backingStore/>" in vol.XMLDesc(0) or "<backingStore>" not in vol.XMLDesc(0)
        assert vol.info()[1] == 1024**3  # the flavor's disk, blank
    finally:
        conn.close()
    resp = server.client.delete(f"/instances/{iid}")
    assert server.wait_task(resp.json()["task_id"])["status"] == "succeeded"
    assert libvirt_leftovers(iid) == []
    assert server.client.delete(f"/images/{image['id']}").status_code == 204
    assert libvirt_leftovers(image["id"]) == []  # its copy on the host went too
