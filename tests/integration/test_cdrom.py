"""The CD-ROM drive and the boot order, with real guests: the installer flow (boot an
ISO onto a blank disk, install, disk first, eject, boot the installed system) and a
disc inserted into and ejected from a running guest."""

import gzip
import shutil
import subprocess
import xml.etree.ElementTree as ET

import libvirt
import pytest

from nubis.images.tinyimage import build_tiny_image, build_tiny_iso
from tests.integration.guest import guest_run
from tests.integration.server import READY, libvirt_leftovers

pytestmark = pytest.mark.integration
# a guest's first read after a disc change can fail (the drive reports the change
# as a SCSI unit attention): the guest tries again, as udisks and friends do
MOUNT = (
    "mkdir -p /tmp/cd && for i in 1 2 3 4 5; do "
    "mount -t iso9660 -o ro /dev/sr0 /tmp/cd 2>/dev/null && break; sleep 1; done; "
    "grep -q /tmp/cd /proc/mounts"
)


@pytest.fixture(scope="module")
def installer_iso(server, tmp_path_factory):
    """The tiny guest as a bootable ISO carrying an "installer payload": the tiny
    guest's own disk, gzipped, for the booted ISO to write onto the blank disk."""
    work = tmp_path_factory.mktemp("iso")
    qcow2 = build_tiny_image(work / "tiny.qcow2")
    raw = work / "tiny.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", qcow2, raw], check=True)
    payload = work / "disk.gz"
    with open(raw, "rb") as src, gzip.open(payload, "wb", compresslevel=6) as dst:
        shutil.copyfileobj(src, dst)
    iso = build_tiny_iso(work / "installer.iso", extra={"install/disk.gz": payload})
    image = server.upload_image(iso, "installer")
    assert image["disk_format"] == "iso"
    yield image
    # no instance holds it any more: it can go, and its copy on the host with it
    assert server.client.delete(f"/images/{image['id']}").status_code == 204
    assert libvirt_leftovers(image["id"]) == []


def run_task(server, method: str, path: str, **kw) -> dict:
    resp = server.client.request(method, path, **kw)
    assert resp.status_code == 202, resp.text
    task = server.wait_task(resp.json()["task_id"])
    assert task["status"] == "succeeded", task["error"]
    return task


def boot(server, name: str, image: str) -> str:
    resp = server.client.post(
        "/instances", json={"name": name, "image": image, "flavor": "m1.tiny"}
    )
    assert resp.status_code == 202, resp.text
    task = server.wait_task(resp.json()["task_id"])
    assert task["status"] == "succeeded", task["error"]
    server.wait_console(resp.json()["id"])
    return resp.json()["id"]


def boot_orders(instance_id: str) -> dict[str, str | None]:
    """target device -> <boot order> in the domain's persistent definition."""
    conn = libvirt.open("qemu:///system")
    try:
        xml = conn.lookupByUUIDString(instance_id).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    finally:
        conn.close()
    orders = {}
    for disk in ET.fromstring(xml).findall("./devices/disk"):
        boot = disk.find("boot")
        orders[disk.find("target").get("dev")] = boot.get("order") if boot is not None else None
    return orders


def delete(server, iid: str) -> None:
    run_task(server, "DELETE", f"/instances/{iid}")
    assert libvirt_leftovers(iid) == []


def test_installer_flow_boot_iso_install_then_boot_from_disk(server, installer_iso):
    iid = boot(server, "installed", "installer")
    inst = server.instance(iid)
    assert inst["cdrom_image_id"] == installer_iso["id"]
    assert inst["boot_order"] == ["cdrom", "disk"]
    assert boot_orders(iid) == {"vda": "2", "hdc": "1", "hdd": None}  # hdd: seed disc
    # the root disk is blank, the flavor's size, and owes nothing to the ISO
    conn = libvirt.open("qemu:///system")
    try:
        vol = conn.storagePoolLookupByName("nubis-disks").storageVolLookupByName(
            f"nubis-{iid}-root"
        )
        assert "<backingStore>" not in vol.XMLDesc(0).replace("<backingStore/>", "")
        assert vol.info()[1] == 1024**3
    finally:
        conn.close()
    assert inst["clone_mode"] == "full"
    # "install": the system on the disc writes itself onto the blank root disk
    assert guest_run(server, iid, "head -c 512 /dev/vda | tr -d '\\000' | wc -c").strip() == "0"
    out = guest_run(
        server,
        iid,
        f"{MOUNT} && zcat /tmp/cd/install/disk.gz > /dev/vda && sync && umount /tmp/cd && echo OK",
        timeout=180,
    )
    assert out.strip().endswith("OK"), out
    # bad boot orders change nothing
    for order, fragment in [
        ([], "non-empty"),
        (["net"], "boot devices"),
        (["disk", "disk"], "twice"),
    ]:
        resp = server.client.put(f"/instances/{iid}/boot-order", json={"order": order})
        assert resp.status_code == 400 and fragment in resp.text, resp.text
    assert server.instance(iid)["boot_order"] == ["cdrom", "disk"]
    # disk first from the next start, and the disc out
    run_task(server, "PUT", f"/instances/{iid}/boot-order", json={"order": ["disk", "cdrom"]})
    assert server.instance(iid)["boot_order"] == ["disk", "cdrom"]
    assert boot_orders(iid) == {"vda": "1", "hdc": "2", "hdd": None}
    run_task(server, "DELETE", f"/instances/{iid}/cdrom")
    assert server.instance(iid)["cdrom_image_id"] is None
    resp = server.client.delete(f"/instances/{iid}/cdrom")
    assert resp.status_code == 409 and "empty" in resp.text
    # power-cycled, it boots the installed system from its disk: nothing else can boot
    server.act(iid, "stop")
    server.act(iid, "start")
    server.wait_console(iid, count=2)
    assert "no medium" in guest_run(server, iid, "head -c 1 /dev/sr0").lower()
    delete(server, iid)


def test_disc_inserted_and_ejected_on_a_running_guest(server, installer_iso):
    iid = boot(server, "cd-live", "nubis-tiny")
    inst = server.instance(iid)
    assert inst["cdrom_image_id"] is None and inst["boot_order"] == ["disk", "cdrom"]
    assert "no medium" in guest_run(server, iid, "head -c 1 /dev/sr0").lower()
    # refusals change nothing
    for body, status, fragment in [
        ({"image": "nubis-tiny"}, 400, "only ISO images"),
        ({"image": "no-such-image"}, 404, "not found"),
    ]:
        resp = server.client.put(f"/instances/{iid}/cdrom", json=body)
        assert resp.status_code == status and fragment in resp.text, resp.text
    assert (
        server.client.put("/instances/nope/cdrom", json={"image": "installer"}).status_code == 404
    )
    assert server.instance(iid)["cdrom_image_id"] is None
    # in goes the disc: the running guest mounts it and reads its files
    run_task(server, "PUT", f"/instances/{iid}/cdrom", json={"image": "installer"})
    assert server.instance(iid)["cdrom_image_id"] == installer_iso["id"]
    listing = guest_run(server, iid, f"{MOUNT} && ls /tmp/cd /tmp/cd/install && umount /tmp/cd")
    assert "vmlinuz" in listing and "disk.gz" in listing, listing
    # the image cannot be deleted while it is in a drive; the error says where
    resp = server.client.delete(f"/images/{installer_iso['id']}")
    assert resp.status_code == 409 and "cd-live" in resp.text and "eject" in resp.text
    # out it goes, even while the guest has it mounted (and its tray locked)
    guest_run(server, iid, MOUNT)
    run_task(server, "DELETE", f"/instances/{iid}/cdrom")
    assert server.instance(iid)["cdrom_image_id"] is None
    guest_run(server, iid, "umount /tmp/cd")
    assert "no medium" in guest_run(server, iid, "head -c 1 /dev/sr0").lower()
    assert server.instance(iid)["status"] == "running"
    delete(server, iid)


def test_boot_and_disc_survive_a_stopped_instance(server, installer_iso):
    """A disc inserted while the instance is stopped is there at its next start."""
    iid = boot(server, "cd-cold", "nubis-tiny")
    server.act(iid, "stop")
    run_task(server, "PUT", f"/instances/{iid}/cdrom", json={"image": installer_iso["id"]})
    server.act(iid, "start")
    server.wait_console(iid, count=2)
    assert READY in server.console(iid)
    listing = guest_run(server, iid, f"{MOUNT} && ls /tmp/cd && umount /tmp/cd")
    assert "vmlinuz" in listing, listing
    run_task(server, "DELETE", f"/instances/{iid}/cdrom")
    delete(server, iid)
