"""A host connection that breaks under a task (a keepalive timeout of a loaded
libvirtd, a reset) is reopened and the step repeated: the task succeeds.

The server reaches the local libvirtd through a proxy that cuts every connection
through it every 1.5 s while instances are created, stopped, started and deleted."""

import threading

import pytest

from tests.integration.proxy import CuttableProxy
from tests.integration.server import libvirt_leftovers, serving

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def proxy():
    cutter = CuttableProxy()
    yield cutter
    cutter.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory, proxy):
    with serving(tmp_path_factory, NUBIS_LOCAL_HOST_URI=proxy.uri) as srv:
        yield srv


def run(server, method: str, path: str, **kw) -> dict:
    resp = server.client.request(method, path, **kw)
    assert resp.status_code == 202, resp.text
    task = server.wait_task(resp.json()["task_id"])
    assert task["status"] == "succeeded", task["error"]
    return resp.json()


def test_tasks_survive_connections_cut_under_them(server, proxy):
    stop = threading.Event()

    def keep_cutting() -> None:
        while not stop.wait(1.5):
            proxy.cut()

    cutter = threading.Thread(target=keep_cutting, daemon=True)
    cutter.start()
    made = []
    try:
        for name in ("cut-1", "cut-2"):
            body = {"name": name, "image": "nubis-tiny", "flavor": "m1.tiny"}
            made.append(run(server, "POST", "/instances", json=body)["id"])
        ids = list(made)
        for iid in made:
            server.wait_console(iid)
            run(server, "POST", f"/instances/{iid}/actions/stop")
            run(server, "POST", f"/instances/{iid}/actions/start")
            server.wait_status(iid, "running")
        for iid in list(made):
            run(server, "DELETE", f"/instances/{iid}")
            made.remove(iid)
    finally:
        stop.set()
        cutter.join()
        for iid in made:  # a failed run leaves nothing behind either
            server.wait_task(server.client.delete(f"/instances/{iid}").json()["task_id"])
    assert proxy.cuts >= 5
    log = (server.data_dir / "logs" / "nubis.log").read_text()
    assert "reconnecting" in log  # some calls were cut mid-way, and repeated
    for iid in ids:
        assert libvirt_leftovers(iid) == []
