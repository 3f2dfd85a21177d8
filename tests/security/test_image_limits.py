"""Attacks on the image store: filling it (image count and size quotas per project,
also as Glance's usage shows them), one huge upload (the upload limit, announced or
not), and an image built to make qemu-img eat the server's memory (qemu-img runs
under a memory limit)."""

from sqlalchemy import func, select

from nubis.db.models import Image
from nubis.images import inspect
from tests.unit.test_api_contract import qcow2

MIB = 1024 * 1024
OCTETS = {"Content-Type": "application/octet-stream"}


def stored(platform) -> tuple[int, list[str]]:
    with platform.db.read() as s:
        rows = s.scalar(select(func.count()).select_from(Image)) or 0
    return rows, sorted(p.name for p in platform.settings.image_dir.iterdir())


def test_image_quotas_per_project(client, platform, callers, tmp_path):
    member, other = callers["member"], callers["p2-member"]
    data = qcow2(tmp_path, "q.qcow2")
    sysadmin = callers["system_admin"]
    assert sysadmin.put("/projects/p1/quotas", json={"images": 2}).status_code == 200
    assert member.upload("one", data).status_code == 201
    assert member.upload("two", data).status_code == 201
    before = stored(platform)
    over = member.upload("three", data)
    assert over.status_code == 409 and "images: 2 in use + 1 asked > limit 2" in over.text
    assert stored(platform) == before  # nothing of it kept
    assert other.upload("three", data).status_code == 201  # another project's own quota
    # GiB: each image counts its size in whole GiB, rounded up
    sysadmin.put("/projects/p1/quotas", json={"images": 10, "image_gib": 2})
    assert member.upload("four", data).status_code == 409
    usage = member.get("/quotas").json()["quotas"]
    assert usage["images"] == {"limit": 10, "in_use": 2}
    assert usage["image_gib"] == {"limit": 2, "in_use": 2}
    # the OpenStack clients read the same through Glance's usage API
    token = member.token
    glance = client.get("/openstack/image/v2/info/usage", headers={"X-Auth-Token": token})
    assert glance.status_code == 200, glance.text
    got = glance.json()["usage"]
    assert got["image_count_total"] == {"limit": 10, "usage": 2}
    assert got["image_size_total"] == {"limit": 2048, "usage": 2048}


def test_uploads_larger_than_the_store_takes_are_cut_off(client, platform, callers, tmp_path):
    member = callers["member"]
    platform.images.max_upload_bytes = 2 * MIB
    data = qcow2(tmp_path, "big.qcow2") + b"\0" * (3 * MIB)
    before = stored(platform)
    announced = member.upload("big", data)
    assert announced.status_code == 413 and "at most 2097152 bytes" in announced.text

    def chunks():
        for i in range(0, len(data), 256 * 1024):
            yield data[i : i + 256 * 1024]

    streamed = member.upload("big", chunks())
    assert streamed.status_code == 413
    assert stored(platform) == before  # no staged file left either
    # the two-step Glance upload is held to it too
    token = {"X-Auth-Token": member.token}
    made = client.post(
        "/openstack/image/v2/images",
        json={"name": "g", "disk_format": "qcow2", "container_format": "bare"},
        headers=token,
    ).json()
    put = client.put(
        f"/openstack/image/v2/images/{made['id']}/file", content=chunks(), headers=OCTETS | token
    )
    assert put.status_code == 413
    assert (
        client.get(f"/openstack/image/v2/images/{made['id']}", headers=token).json()["status"]
        == "queued"
    )


def test_qemu_img_runs_under_a_memory_limit(client, platform, callers, tmp_path, monkeypatch):
    """With a limit below what qemu-img needs, inspecting fails: the limit is applied
    (a crafted image hits the real one, 1 GiB, instead of the server's memory)."""
    monkeypatch.setattr(inspect, "QEMU_IMG_ADDRESS_SPACE", 8 * MIB)
    before = stored(platform)
    refused = callers["member"].upload("starved", qcow2(tmp_path, "s.qcow2"))
    assert refused.status_code == 400, refused.text
    assert stored(platform) == before
