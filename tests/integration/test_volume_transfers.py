"""Volumes uploaded and downloaded through libvirt streams, on the real local libvirtd:
1 GiB through the API with the server's memory measured, a qcow2 image uploaded and
read by a guest, bad uploads refused with nothing left, images downloaded."""

import hashlib
import os
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from nubis.images.tinyimage import build_tiny_image
from tests.integration.guest import guest_run
from tests.integration.server import READY, NubisServer, libvirt_leftovers
from tests.integration.storage import attach, detach, volume_file, wait_guest

pytestmark = pytest.mark.integration
MIB = 1024**2
GIB = 1024**3
OCTETS = {"Content-Type": "application/octet-stream"}


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


class Sampler:
    """The server's resident memory and the transfer tasks' progress, sampled while
    a transfer runs."""

    def __init__(self, server: NubisServer, kind: str) -> None:
        self.server, self.kind = server, kind
        self.base = rss_kib(server.proc.pid)
        self.peak = self.base
        self.progress: set[int] = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        client = httpx.Client(
            base_url=str(self.server.client.base_url), timeout=30, verify=self.server.verify()
        )
        client.headers.update(self.server.client.headers)
        while not self.stop.wait(0.1):
            self.peak = max(self.peak, rss_kib(self.server.proc.pid))
            tasks = client.get("/tasks", params={"status": "running"}).json()["items"]
            self.progress |= {t["progress"] for t in tasks if t["kind"] == self.kind}
        client.close()

    def __enter__(self) -> "Sampler":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.base) / 1024


def pattern(total: int, digest: "hashlib._Hash"):
    """``total`` bytes, 1 MiB at a time, none alike, hashed as they are made."""
    for i in range(total // MIB):
        block = hashlib.sha256(str(i).encode()).digest() * (MIB // 32)
        digest.update(block)
        yield block


def upload(server, source, length: int, **params) -> httpx.Response:
    return server.client.post(
        "/volumes/upload",
        params=params,
        content=source,
        headers={**OCTETS, "Content-Length": str(length)},
        timeout=600,
    )


def remove(server, volume_id: str) -> None:
    resp = server.client.delete(f"/volumes/{volume_id}")
    assert resp.status_code == 202, resp.text
    assert server.wait_task(resp.json()["task_id"])["status"] == "succeeded"
    assert libvirt_leftovers(volume_id) == []


def test_one_gib_streams_up_and_down_with_bounded_memory(server, pool):
    sent = hashlib.sha256()
    with Sampler(server, "volume.upload") as up:
        t0 = time.monotonic()
        resp = upload(server, pattern(GIB, sent), GIB, name="big", pool="local-dir")
        up_s = time.monotonic() - t0
    assert resp.status_code == 201, resp.text
    vol = resp.json()
    assert (vol["status"], vol["format"], vol["size_gib"]) == ("available", "raw", 1)
    assert os.stat(volume_file(pool, vol)).st_size == GIB
    # the progress was visible while it ran, and the task ended well
    assert any(0 < p < 100 for p in up.progress), up.progress
    tasks = server.client.get("/tasks", params={"resource_id": vol["id"]}).json()["items"]
    assert [(t["kind"], t["status"], t["progress"]) for t in tasks] == [
        ("volume.upload", "succeeded", 100)
    ]

    received = hashlib.sha256()
    length = 0
    with Sampler(server, "volume.download") as down:
        t0 = time.monotonic()
        with server.client.stream("GET", f"/volumes/{vol['id']}/download") as stream:
            assert stream.status_code == 200
            assert int(stream.headers["content-length"]) == GIB
            assert 'filename="big.img"' in stream.headers["content-disposition"]
            for data in stream.iter_bytes(MIB):
                received.update(data)
                length += len(data)
        down_s = time.monotonic() - t0
    assert length == GIB and received.hexdigest() == sent.hexdigest()
    assert any(0 < p < 100 for p in down.progress), down.progress
    print(
        f"\n1 GiB upload: {up_s:.1f} s, server RSS +{up.growth_mib:.1f} MiB; "
        f"download: {down_s:.1f} s, RSS +{down.growth_mib:.1f} MiB"
    )
    # streamed: the server never held more than a few chunks of the gigabyte
    assert up.growth_mib < 64 and down.growth_mib < 64
    assert server.client.get(f"/volumes/{vol['id']}").json()["task_state"] is None
    remove(server, vol["id"])


def test_a_qcow2_image_becomes_a_volume_then_a_template_that_boots(server, pool, guest, tmp_path):
    tiny = build_tiny_image(tmp_path / "tiny.qcow2")
    with open(tiny, "rb") as fh:
        resp = upload(server, fh, tiny.stat().st_size, name="boot-disk", pool="local-dir")
    assert resp.status_code == 201, resp.text
    vol = resp.json()
    # grown from the image's 32 MiB to whole GiB
    assert (vol["format"], vol["size_gib"]) == ("qcow2", 1)
    att = attach(server, guest["id"], vol["id"])
    dev = att["target"]
    wait_guest(server, guest["id"], f"cat /sys/block/{dev}/serial", att["serial"])
    assert guest_run(server, guest["id"], f"cat /sys/block/{dev}/size").strip() == str(GIB // 512)
    # the guest sees the image's content, not the qcow2 container: a FAT boot sector
    out = guest_run(server, guest["id"], f"head -c 512 /dev/{dev} | tail -c 2 | od -An -tx1")
    assert out.split() == ["55", "aa"], out
    # a volume in use by a running instance is neither downloaded nor templated
    resp = server.client.get(f"/volumes/{vol['id']}/download")
    assert resp.status_code == 409 and "running" in resp.text
    resp = server.client.post(
        f"/volumes/{vol['id']}/actions/create-template", json={"name": "from-volume"}
    )
    assert resp.status_code == 409 and "not stopped" in resp.text
    detach(server, guest["id"], vol["id"])
    out = tmp_path / "back.qcow2"
    with server.client.stream("GET", f"/volumes/{vol['id']}/download") as stream:
        assert stream.status_code == 200
        with open(out, "wb") as fh:
            for data in stream.iter_bytes(MIB):
                fh.write(data)
    # the same disk as uploaded (the extra space reads as zeros)
    subprocess.run(["qemu-img", "compare", "-q", str(tiny), str(out)], check=True)

    # the volume becomes a template, and the template boots new instances
    for body, status in [({"name": "nubis-tiny"}, 409), ({"name": "bad name"}, 400)]:
        resp = server.client.post(f"/volumes/{vol['id']}/actions/create-template", json=body)
        assert resp.status_code == status, resp.text
    resp = server.client.post(
        f"/volumes/{vol['id']}/actions/create-template", json={"name": "from-volume"}
    )
    assert resp.status_code == 202, resp.text
    task = server.wait_task(resp.json()["task_id"])
    assert task["status"] == "succeeded", task["error"]
    image = server.client.get("/images/from-volume").json()
    assert (image["disk_format"], image["virtual_size"]) == ("qcow2", GIB)
    assert server.client.get(f"/volumes/{vol['id']}").json()["task_state"] is None
    resp = server.client.post(
        "/instances", json={"name": "from-vol", "image": "from-volume", "flavor": "m1.tiny"}
    )
    assert resp.status_code == 202, resp.text
    assert server.wait_task(resp.json()["task_id"])["status"] == "succeeded"
    assert READY in server.wait_console(resp.json()["id"])
    resp = server.client.delete(f"/instances/{resp.json()['id']}")
    assert server.wait_task(resp.json()["task_id"])["status"] == "succeeded"
    assert server.client.delete(f"/images/{image['id']}").status_code == 204
    remove(server, vol["id"])


def test_bad_uploads_are_refused_and_leave_nothing(server, pool, tmp_path):
    before = server.client.get("/volumes").json()["total"]
    files_before = sorted(os.listdir(pool["path"]))
    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "1M"], check=True)
    backed = tmp_path / "backed.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(backed)],
        check=True,
    )
    vmdk = tmp_path / "x.vmdk"
    subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", str(vmdk), "1M"], check=True)
    huge = tmp_path / "huge.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(huge), "20000G"], check=True)
    cases = [
        (backed.read_bytes(), {"pool": "local-dir"}, 400, "backing file"),
        (vmdk.read_bytes(), {"pool": "local-dir"}, 400, "vmdk"),
        (huge.read_bytes(), {"pool": "local-dir"}, 400, "16384 GiB"),
        (b"", {"pool": "local-dir"}, 400, "empty"),
        (b"x" * 4096, {"pool": "no-such-pool"}, 404, "not found"),
        (b"x" * 4096, {"pool": "local-dir", "name": "bad name!"}, 400, "volume name"),
    ]
    for body, params, status, fragment in cases:
        resp = upload(server, body, len(body), **{"name": "bad", **params})
        assert resp.status_code == status and fragment in resp.text, (params, resp.text)
    resp = server.client.post(
        "/volumes/upload",
        params={"name": "bad", "pool": "local-dir"},
        content=b"x",
        headers={"Content-Type": "application/json"},
    )
    assert resp.status_code == 400 and "octet-stream" in resp.text

    # a client that goes away half-way: the half-written volume is removed
    def cut_short():
        yield b"\x00" * MIB
        yield b"\x00" * MIB
        raise ConnectionAbortedError("client gave up")

    with pytest.raises((ConnectionAbortedError, httpx.HTTPError)):
        upload(server, cut_short(), 64 * MIB, name="cut", pool="local-dir")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        tasks = server.client.get("/tasks", params={"status": "failed"}).json()["items"]
        if any(t["kind"] == "volume.upload" for t in tasks):
            break
        time.sleep(0.2)
    failed = [t for t in tasks if t["kind"] == "volume.upload"]
    assert failed and "went away" in failed[-1]["error"], tasks
    assert server.client.get("/volumes").json()["total"] == before
    assert sorted(os.listdir(pool["path"])) == files_before


def test_images_download_as_stored(server, tmp_path):
    image = server.client.get("/images/nubis-tiny").json()
    digest = hashlib.sha256()
    with server.client.stream("GET", f"/images/{image['id']}/file") as stream:
        assert stream.status_code == 200
        assert int(stream.headers["content-length"]) == image["size"]
        for data in stream.iter_bytes(MIB):
            digest.update(data)
    assert digest.hexdigest() == image["sha256"]
    assert server.client.get("/images/no-such/file").status_code == 404


def test_upload_killed_with_the_server_is_removed_at_restart(tmp_path):
    """The control plane dies mid-upload: the next start fails the task and removes
    the half-written volume (its file and its record)."""
    srv = NubisServer(tmp_path / "data", NUBIS_RECONCILE_INTERVAL_SECONDS="600")
    srv.start()
    path = Path(tmp_path / "pool")
    path.mkdir()
    try:
        resp = srv.client.post(
            "/storage-pools",
            json={"name": "p", "kind": "dir", "path": str(path), "host": "local"},
        )
        assert resp.status_code == 201, resp.text
        started = threading.Event()

        def slow():
            for _ in range(8):
                yield b"\x00" * MIB
                started.set()
                time.sleep(0.5)

        def doomed() -> None:
            try:
                upload(srv, slow(), 64 * MIB, name="doomed", pool="p")
            except httpx.HTTPError:
                pass  # the server died under it

        thread = threading.Thread(target=doomed, daemon=True)
        thread.start()
        assert started.wait(30)
        deadline = time.monotonic() + 30  # the volume's file appears once the stream opens
        while not [f for f in os.listdir(path) if f.startswith("nubis-vol-")]:
            assert time.monotonic() < deadline, "the upload never reached the pool"
            time.sleep(0.2)
        srv.proc.kill()
        srv.wait_exit()
        thread.join(30)
        srv.start()
        assert srv.client.get("/volumes").json()["total"] == 0
        assert os.listdir(path) == []
        tasks = srv.client.get("/tasks", params={"status": "failed"}).json()["items"]
        assert [t["kind"] for t in tasks] == ["volume.upload"]
        assert srv.client.delete("/storage-pools/p").status_code == 204
    finally:
        srv.stop()
