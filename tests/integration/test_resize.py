"""Resizing a real guest: it comes back with the new flavor's vCPUs, memory and root
disk; a revert gives it back its old ones, a confirm keeps them."""

import libvirt
import pytest

from nubis.drivers.libvirt import storage
from tests.integration.guest import guest_run
from tests.integration.server import libvirt_leftovers

pytestmark = pytest.mark.integration
GIB_SECTORS = 2**30 // 512


def _sizes(server, iid: str) -> tuple[str, str]:
    """What the guest itself sees: its CPUs, its root disk's size in 512-byte sectors."""
    cpus = guest_run(server, iid, "nproc").strip()
    disk = guest_run(server, iid, "cat /sys/block/vda/size").strip()
    return cpus, disk


def _memory_kib(server, iid: str) -> int:
    line = guest_run(server, iid, "grep MemTotal /proc/meminfo")
    return int(line.split()[1])


def _host(server) -> dict:
    return server.client.get("/hosts/local").json()


def _pool_volumes() -> list[str]:
    conn = libvirt.open("qemu:///system")
    try:
        pool = conn.storagePoolLookupByName("nubis-disks")
        # the pool is shared with the other test worker's instances: libvirt refuses a
        # refresh while one of their image copies streams into it, and this waits
        storage.refresh(pool)
        return pool.listVolumes()
    finally:
        conn.close()


def _resize(server, iid: str, flavor: str) -> dict:
    resp = server.client.post(f"/instances/{iid}/actions/resize", json={"flavor": flavor})
    assert resp.status_code == 202, resp.text
    task = server.wait_task(resp.json()["task_id"], timeout=240)
    assert task["status"] == "succeeded", task
    return server.instance(iid)


def test_resize_revert_and_confirm(server):
    flavor = server.client.post(
        "/flavors", json={"name": "r.big", "vcpus": 2, "memory_mib": 256, "disk_gib": 2}
    )
    assert flavor.status_code == 201, flavor.text
    created = server.client.post(
        "/instances", json={"name": "grow", "image": "nubis-tiny", "flavor": "m1.tiny"}
    ).json()
    iid = created["id"]
    assert server.wait_task(created["task_id"])["status"] == "succeeded"
    server.wait_console(iid, 1)
    assert _sizes(server, iid) == ("1", str(GIB_SECTORS))
    small_memory = _memory_kib(server, iid)
    host_before = _host(server)

    # a running instance: shut down, given the new sizes, started again
    inst = _resize(server, iid, "r.big")
    assert (inst["status"], inst["vcpus"], inst["memory_mib"], inst["disk_gib"]) == (
        "running",
        2,
        256,
        2,
    )
    assert inst["resize_from"]["vcpus"] == 1 and inst["resize_from"]["disk_gib"] == 1
    server.wait_console(iid, 2)  # booted again
    assert _sizes(server, iid) == ("2", str(2 * GIB_SECTORS))
    assert _memory_kib(server, iid) > small_memory + 100 * 1024
    host = _host(server)
    assert host["alloc_vcpus"] == host_before["alloc_vcpus"] + 1
    assert host["alloc_memory_mib"] == host_before["alloc_memory_mib"] + 128
    assert host["alloc_disk_gib"] == host_before["alloc_disk_gib"] + 1
    assert f"nubis-{iid}-root.pre-resize" in _pool_volumes()  # the old disk, for a revert

    # one resize at a time; a disk does not shrink; nothing changes when refused
    again = server.client.post(f"/instances/{iid}/actions/resize", json={"flavor": "m1.small"})
    assert again.status_code == 409 and "confirm or revert" in again.text
    assert server.instance(iid)["vcpus"] == 2

    # revert: the old flavor, the old disk, the claims given back
    server.act(iid, "revert-resize")
    inst = server.instance(iid)
    assert (inst["status"], inst["vcpus"], inst["disk_gib"], inst["resize_from"]) == (
        "running",
        1,
        1,
        None,
    )
    server.wait_console(iid, 3)
    assert _sizes(server, iid) == ("1", str(GIB_SECTORS))
    host = _host(server)
    assert (host["alloc_vcpus"], host["alloc_disk_gib"]) == (
        host_before["alloc_vcpus"],
        host_before["alloc_disk_gib"],
    )
    assert not [v for v in _pool_volumes() if iid in v and "pre-resize" in v]

    # a stopped instance stays stopped; confirm keeps the new flavor
    server.act(iid, "stop")
    inst = _resize(server, iid, "r.big")
    assert (inst["status"], inst["vcpus"]) == ("stopped", 2)
    refused = server.client.post(f"/instances/{iid}/actions/resize", json={"flavor": "m1.tiny"})
    assert refused.status_code == 409
    server.act(iid, "confirm-resize")
    inst = server.instance(iid)
    assert (inst["status"], inst["vcpus"], inst["resize_from"]) == ("stopped", 2, None)
    assert not [v for v in _pool_volumes() if iid in v and "pre-resize" in v]
    server.act(iid, "start")
    server.wait_console(iid, 4)
    assert _sizes(server, iid) == ("2", str(2 * GIB_SECTORS))
    shrink = server.client.post(f"/instances/{iid}/actions/resize", json={"flavor": "m1.tiny"})
    assert shrink.status_code == 400 and "cannot shrink" in shrink.text
    unknown = server.client.post(f"/instances/{iid}/actions/resize", json={"flavor": "nope"})
    assert unknown.status_code == 404
    nothing = server.client.post(f"/instances/{iid}/actions/confirm-resize")
    assert nothing.status_code == 409 and "no resize" in nothing.text
    assert server.instance(iid)["vcpus"] == 2

    resp = server.client.delete(f"/instances/{iid}")
    assert server.wait_task(resp.json()["task_id"])["status"] == "succeeded"
    assert libvirt_leftovers(iid) == []
