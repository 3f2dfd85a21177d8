"""Changes made behind Nubis's back reach it through libvirt events, not polling.

The server here reconciles only every 600 s, so a change seen within seconds
can only have come from an event.
"""

import time

import libvirt
import pytest

from tests.integration.server import libvirt_leftovers

pytestmark = pytest.mark.integration


def test_virsh_destroy_and_start_show_up_within_a_second(server):
    created = server.client.post(
        "/instances", json={"name": "evented", "image": "nubis-tiny", "flavor": "m1.tiny"}
    ).json()
    iid = created["id"]
    assert server.wait_task(created["task_id"])["status"] == "succeeded"
    conn = libvirt.open("qemu:///system")
    try:
        dom = conn.lookupByUUIDString(iid)
        dom.destroy()
        t0 = time.monotonic()
        server.wait_status(iid, "stopped", timeout=5)
        assert time.monotonic() - t0 < 1.5
        dom.create()
        server.wait_status(iid, "running", timeout=5)
        dom.suspend()
        server.wait_status(iid, "paused", timeout=5)
        dom.resume()
        server.wait_status(iid, "running", timeout=5)
    finally:
        conn.close()
    resp = server.client.delete(f"/instances/{iid}")
    assert server.wait_task(resp.json()["task_id"])["status"] == "succeeded"
    assert libvirt_leftovers(iid) == []
