"""Helpers of the storage tests: volumes created, attached and detached through the
API, and what the guest or the pool's directory shows of them."""

from __future__ import annotations

import os
import time

import libvirt

from tests.integration.guest import guest_run


def create_volume(server, **body) -> dict:
    resp = server.client.post("/volumes", json=body)
    assert resp.status_code == 202, resp.text
    task = server.wait_task(resp.json()["task_id"])
    assert task["status"] == "succeeded", task
    return server.client.get(f"/volumes/{resp.json()['id']}").json()


def attach(server, instance_id: str, volume_id: str) -> dict:
    resp = server.client.post(f"/instances/{instance_id}/volumes", json={"volume": volume_id})
    assert resp.status_code == 202, resp.text
    task = server.wait_task(resp.json()["task_id"])
    assert task["status"] == "succeeded", task["error"]
    return resp.json()


def detach(server, instance_id: str, volume_id: str) -> None:
    resp = server.client.delete(f"/instances/{instance_id}/volumes/{volume_id}")
    assert resp.status_code == 202, resp.text
    task = server.wait_task(resp.json()["task_id"])
    assert task["status"] == "succeeded", task


def move(server, volume_id: str, pool: str) -> dict:
    """Move the volume to ``pool`` through the API; the finished task."""
    resp = server.client.post(f"/volumes/{volume_id}/actions/migrate", json={"pool": pool})
    assert resp.status_code == 202, resp.text
    task = server.wait_task(resp.json()["task_id"])
    assert task["status"] == "succeeded", task
    return task


def wait_guest(
    server, iid: str, command: str, expected: str, timeout: float = 30, uri: str = "qemu:///system"
) -> str:
    deadline = time.monotonic() + timeout
    while True:
        out = guest_run(server, iid, command, uri=uri).strip()
        if out == expected or time.monotonic() > deadline:
            return out
        time.sleep(1)


def volume_file(pool: dict, volume: dict) -> str:
    ext = ".qcow2" if volume["format"] == "qcow2" else ".img"
    return os.path.join(pool["path"], f"nubis-vol-{volume['id']}{ext}")


def libvirt_storage(uri: str = "qemu:///system") -> tuple[list[str], list[str]]:
    """Nubis's libvirt pools and secrets (Ceph keys, CHAP secrets) on a host (sorted:
    libvirt lists them in no set order)."""
    conn = libvirt.open(uri)
    try:
        pools = [p for p in conn.listAllStoragePools() if p.name().startswith("nubis-pool-")]
        secrets = [s.usageID() for s in conn.listAllSecrets()]
        names = sorted(p.name() for p in pools)
        return names, sorted(s for s in secrets if s.startswith("nubis-pool-"))
    finally:
        conn.close()
