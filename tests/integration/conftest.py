import os
import shutil
import tempfile

import pytest

from tests.integration.server import serving


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One Nubis server per test module, managing the real local libvirtd."""
    with serving(tmp_path_factory) as srv:
        yield srv


@pytest.fixture(scope="module")
def pool(server):
    # QEMU runs as its own user: the pool's directory and its parents must let it in
    # (pytest's temporary directories are private to root)
    path = tempfile.mkdtemp(prefix="nubis-test-pool-", dir="/var/tmp")
    os.chmod(path, 0o755)
    resp = server.client.post(
        "/storage-pools",
        json={"name": "local-dir", "kind": "dir", "path": str(path), "host": "local"},
    )
    assert resp.status_code == 201, resp.text
    out = resp.json()
    assert out["state"] == "active" and out["capacity_bytes"] > 0
    yield out
    assert server.client.delete("/storage-pools/local-dir").status_code == 204
    assert os.listdir(path) == []  # every volume was removed
    shutil.rmtree(path)


@pytest.fixture(scope="module")
def guest(server):
    """A running nubis-tiny instance for the test module."""
    resp = server.client.post(
        "/instances", json={"name": "vol-guest", "image": "nubis-tiny", "flavor": "m1.tiny"}
    )
    assert resp.status_code == 202, resp.text
    inst = resp.json()
    assert server.wait_task(inst["task_id"])["status"] == "succeeded"
    server.wait_console(inst["id"])
    yield inst
    resp = server.client.delete(f"/instances/{inst['id']}")
    assert server.wait_task(resp.json()["task_id"])["status"] == "succeeded"
