"""Templates from a stopped instance, and linked and full clones booted from them,
on the real local libvirtd with real guests."""

import libvirt
import pytest

from tests.integration.guest import guest_run
from tests.integration.server import libvirt_leftovers

pytestmark = pytest.mark.integration
# far past the tiny image's 32 MiB boot file system, inside the 1 GiB root disk
MARK_AT_MIB = 900


def boot(server, name: str, image: str = "nubis-tiny", **extra) -> dict:
    resp = server.client.post(
        "/instances", json={"name": name, "image": image, "flavor": "m1.tiny", **extra}
    )
    assert resp.status_code == 202, resp.text
    task = server.wait_task(resp.json()["task_id"])
    assert task["status"] == "succeeded", task["error"]
    server.wait_console(resp.json()["id"])
    return server.instance(resp.json()["id"])


def read_mark(server, iid: str) -> str:
    return guest_run(
        server, iid, f"dd if=/dev/vda bs=1M skip={MARK_AT_MIB} count=1 2>/dev/null | head -c 11"
    ).strip()


def backing_of(instance_id: str) -> str | None:
    conn = libvirt.open("qemu:///system")
    try:
        pool = conn.storagePoolLookupByName("nubis-disks")
        xml = pool.storageVolLookupByName(f"nubis-{instance_id}-root").XMLDesc(0)
    finally:
        conn.close()
    if "<backingStore>" not in xml:
        return None
    return xml.split("<backingStore>")[1].split("<path>")[1].split("</path>")[0]


def delete(server, iid: str) -> None:
    resp = server.client.delete(f"/instances/{iid}")
    assert server.wait_task(resp.json()["task_id"])["status"] == "succeeded"
    assert libvirt_leftovers(iid) == []


def test_template_linked_and_full_clones(server):
    golden = boot(server, "golden")
    gid = golden["id"]
    guest_run(
        server,
        gid,
        f"echo GOLDEN-MARK | dd of=/dev/vda bs=1M seek={MARK_AT_MIB} conv=notrunc; sync",
    )
    assert read_mark(server, gid) == "GOLDEN-MARK"
    # a running instance cannot be templated: its disk changes under the copy
    resp = server.client.post(f"/instances/{gid}/actions/create-template", json={"name": "t"})
    assert resp.status_code == 409 and "stopped" in resp.text
    server.act(gid, "stop")
    for body, status in [({"name": "nubis-tiny"}, 409), ({"name": "bad name"}, 400)]:
        resp = server.client.post(f"/instances/{gid}/actions/create-template", json=body)
        assert resp.status_code == status, resp.text
    resp = server.client.post(f"/instances/{gid}/actions/create-template", json={"name": "tmpl"})
    assert resp.status_code == 202, resp.text
    # the image is there at once, under the name it holds, until the task makes it
    early = server.client.get("/images/tmpl").json()
    assert early["status"] in ("creating", "active")
    if early["status"] == "creating":
        refused = server.client.delete(f"/images/{early['id']}")
        assert refused.status_code == 409 and "being made" in refused.text
    again = server.client.post(f"/instances/{gid}/actions/create-template", json={"name": "tmpl"})
    assert again.status_code == 409
    task = server.wait_task(resp.json()["task_id"])
    assert task["status"] == "succeeded", task["error"]
    assert server.instance(gid)["status"] == "stopped"
    image = server.client.get("/images/tmpl").json()
    assert image["status"] == "active" and image["disk_format"] == "qcow2"

    resp = server.client.post(
        "/instances", json={"name": "c", "image": "tmpl", "flavor": "m1.tiny", "clone": "weird"}
    )
    assert resp.status_code == 400 and "clone must be one of" in resp.text
    linked = boot(server, "linked-1", image="tmpl")
    full = boot(server, "full-1", image="tmpl", clone="full")
    assert (linked["clone_mode"], full["clone_mode"]) == ("linked", "full")
    # both boot from the template and see what the golden instance had written
    assert read_mark(server, linked["id"]) == "GOLDEN-MARK"
    assert read_mark(server, full["id"]) == "GOLDEN-MARK"
    # the linked clone is an overlay of the template's copy; the full clone stands alone
    assert backing_of(linked["id"]) is not None and image["id"] in backing_of(linked["id"])
    assert backing_of(full["id"]) is None
    # the template is protected while a linked clone needs it, and the error names it
    resp = server.client.delete(f"/images/{image['id']}")
    assert resp.status_code == 409 and "linked-1" in resp.text and "full-1" not in resp.text
    delete(server, linked["id"])
    resp = server.client.delete(f"/images/{image['id']}")
    assert resp.status_code == 204, resp.text
    # the full clone does not need it
    assert read_mark(server, full["id"]) == "GOLDEN-MARK"
    for iid in (full["id"], gid):
        delete(server, iid)


def test_full_clone_of_a_stopped_instance(server):
    orig = boot(server, "orig")
    oid = orig["id"]
    guest_run(
        server,
        oid,
        f"echo ORIG-MARK-1 | dd of=/dev/vda bs=1M seek={MARK_AT_MIB} conv=notrunc; sync",
    )
    # a running instance is not cloned: its disk changes under the copy
    resp = server.client.post(f"/instances/{oid}/actions/clone", json={"name": "copy-1"})
    assert resp.status_code == 409 and "stopped" in resp.text
    server.act(oid, "stop")
    for body, status in [({"name": "orig"}, 409), ({"name": "bad name"}, 400)]:
        resp = server.client.post(f"/instances/{oid}/actions/clone", json=body)
        assert resp.status_code == status, resp.text
    resp = server.client.post(f"/instances/{oid}/actions/clone", json={"name": "copy-1"})
    assert resp.status_code == 202, resp.text
    copy = resp.json()
    assert (copy["clone_mode"], copy["host_id"]) == ("full", orig["host_id"])
    task = server.wait_task(copy["task_id"])
    assert task["status"] == "succeeded", task["error"]
    server.wait_console(copy["id"])
    # the copy has the original's data in a disk of its own; the original is free again
    assert read_mark(server, copy["id"]) == "ORIG-MARK-1"
    assert backing_of(copy["id"]) is None
    inst = server.instance(oid)
    assert (inst["status"], inst["task_state"]) == ("stopped", None)
    for iid in (copy["id"], oid):
        delete(server, iid)
