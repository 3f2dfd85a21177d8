"""Attack: a guest writes a qcow2 header naming a host file as its backing file into
its own raw data volume, then its owner asks the platform to copy the volume in
every way there is. No copy may contain the host file's bytes (here the server's
``secret.key``): each holds exactly what the guest wrote, header included, read as
the raw disk it is. The volume also still grows like a raw disk."""

import base64
import gzip
import subprocess
from pathlib import Path

import pytest

from tests.integration.guest import guest_run
from tests.integration.server import NubisServer, libvirt_leftovers
from tests.integration.storage import attach, create_volume, detach, wait_guest

pytestmark = pytest.mark.integration
GIB = 1024**3
QCOW2_MAGIC = b"QFI\xfb"


def hostile_header(tmp_path: Path, target: Path) -> bytes:
    """The first 256 KiB of a qcow2 image (header, tables) whose backing file is
    ``target`` (raw): every cluster of it reads from the host file."""
    path = tmp_path / "hostile.qcow2"
    subprocess.run(
        [
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            str(target),
            "-F",
            "raw",
            str(path),
            "1G",
        ],
        check=True,
    )
    return path.read_bytes()[: 256 * 1024]


def write_into_disk(server: NubisServer, iid: str, dev: str, data: bytes) -> None:
    encoded = base64.b64encode(gzip.compress(data, 9)).decode()
    out = guest_run(
        server,
        iid,
        f"echo {encoded} | base64 -d | gunzip | dd of=/dev/{dev} conv=fsync 2>/dev/null"
        f" && head -c 4 /dev/{dev} | od -An -c",
    )
    assert "Q   F   I" in out, out


def logical_bytes(server: NubisServer, tmp_path: Path, url: str, fmt: str) -> Path:
    """Download ``url`` and give the disk it holds as raw bytes, reading it as the
    format the platform recorded (never letting qemu-img guess)."""
    downloaded = tmp_path / f"download.{fmt}"
    with server.client.stream("GET", url) as resp:
        assert resp.status_code == 200, resp.read()
        with open(downloaded, "wb") as fh:
            for chunk in resp.iter_bytes():
                fh.write(chunk)
    if fmt == "raw":
        return downloaded
    raw = tmp_path / "logical.raw"
    subprocess.run(
        ["qemu-img", "convert", "-f", fmt, "-O", "raw", str(downloaded), str(raw)], check=True
    )
    downloaded.unlink()
    return raw


def contains(path: Path, needle: bytes) -> bool:
    overlap = b""
    with open(path, "rb") as fh:
        while chunk := fh.read(8 << 20):
            if needle in overlap + chunk:
                return True
            overlap = chunk[-len(needle) :]
    return False


def check_copy(path: Path, secret: bytes, header: bytes) -> None:
    """The copy is the guest's raw disk: its header as data, no host byte."""
    assert not contains(path, secret), f"{path.name} holds the host's secret.key"
    with open(path, "rb") as fh:
        assert fh.read(len(header)) == header
    path.unlink()


def run_task(server: NubisServer, method: str, path: str, **kw) -> dict:
    resp = server.client.request(method, path, **kw)
    assert resp.status_code in (201, 202), resp.text
    body = resp.json()
    task = server.wait_task(body["task_id"])
    assert task["status"] == "succeeded", task["error"]
    return body


def test_no_copy_of_a_raw_volume_follows_a_header_the_guest_wrote(server, pool, guest, tmp_path):
    secret_file = server.data_dir / "secret.key"
    secret = secret_file.read_bytes().strip()
    assert len(secret) >= 32
    header = hostile_header(tmp_path, secret_file)
    iid = guest["id"]
    vol = create_volume(server, name="hostile", size_gib=1, pool="local-dir", format="raw")
    att = attach(server, iid, vol["id"])
    dev = att["target"]
    wait_guest(server, iid, f"cat /sys/block/{dev}/serial", att["serial"])
    write_into_disk(server, iid, dev, header)

    # a snapshot taken while the guest runs with the disk attached
    run_task(server, "POST", f"/volumes/{vol['id']}/snapshots", json={"name": "live"})
    detach(server, iid, vol["id"])
    # ... and one of the detached volume
    run_task(server, "POST", f"/volumes/{vol['id']}/snapshots", json={"name": "cold"})
    made = []
    for snap in ("live", "cold"):
        clone = create_volume(server, name=f"from-{snap}", snapshot=snap)
        made.append(clone["id"])
        url = f"/volumes/{clone['id']}/download"
        check_copy(logical_bytes(server, tmp_path, url, clone["format"]), secret, header)

    # a template of the volume: an image, downloaded from the image store
    run_task(
        server, "POST", f"/volumes/{vol['id']}/actions/create-template", json={"name": "hostile"}
    )
    image = server.client.get("/images/hostile").json()
    assert image["status"] == "active", image
    url = f"/images/{image['id']}/file"
    check_copy(logical_bytes(server, tmp_path, url, image["disk_format"]), secret, header)

    # the volume itself, downloaded
    url = f"/volumes/{vol['id']}/download"
    check_copy(logical_bytes(server, tmp_path, url, "raw"), secret, header)

    # reverted to a snapshot: the volume is the guest's bytes again
    run_task(server, "POST", f"/volumes/{vol['id']}/snapshots/cold/actions/revert")
    check_copy(logical_bytes(server, tmp_path, url, "raw"), secret, header)

    # extended, it is a raw disk of the new size with the guest's bytes in front
    run_task(server, "POST", f"/volumes/{vol['id']}/actions/extend", json={"size_gib": 2})
    assert server.client.get(f"/volumes/{vol['id']}").json()["size_gib"] == 2
    att = attach(server, iid, vol["id"])
    dev = att["target"]
    wait_guest(server, iid, f"cat /sys/block/{dev}/serial", att["serial"])
    assert guest_run(server, iid, f"cat /sys/block/{dev}/size").strip() == str(2 * GIB // 512)
    assert "Q   F   I" in guest_run(server, iid, f"head -c 4 /dev/{dev} | od -An -c")
    detach(server, iid, vol["id"])

    # clean up: nothing of any of it is left
    assert server.client.delete(f"/images/{image['id']}").status_code == 204
    for snap in ("live", "cold"):
        run_task(server, "DELETE", f"/volumes/{vol['id']}/snapshots/{snap}")
    for volume_id in [*made, vol["id"]]:
        run_task(server, "DELETE", f"/volumes/{volume_id}")
        assert libvirt_leftovers(volume_id) == []
