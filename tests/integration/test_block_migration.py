"""Migration between hosts that share no disk directory (a 2-host devcluster, each host
with its own disk pool): a running guest moves with its root disk copied during the
migration, keeps running and keeps what it wrote; its files leave the host it left;
stopped, it moves back with its files copied first and boots there."""

from __future__ import annotations

import pytest

from nubis.devcluster.chaos import register_hosts
from tests.integration.guest import guest_run, wait_uptime
from tests.integration.server import READY, libvirt_leftovers, running_devcluster, serving

pytestmark = pytest.mark.integration

# far into the disk, past anything the image holds: the guest's own data
SECTOR = 200000
DATA = "NUBIS-BM-4242"
WRITE = f"printf {DATA} | dd of=/dev/vda bs=512 seek={SECTOR} conv=notrunc; sync"
READ = f"dd if=/dev/vda bs=512 skip={SECTOR} count=1 2>/dev/null | head -c {len(DATA)}"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with running_devcluster(tmp_path_factory.mktemp("devcluster"), 2, shared_disks=False) as c:
        yield c


@pytest.fixture(scope="module")
def srv(cluster, tmp_path_factory):
    with serving(tmp_path_factory) as s:
        register_hosts(s.client, cluster)
        yield s


def where(srv, iid: str) -> str:
    names = {h["id"]: h["name"] for h in srv.client.get("/hosts").json()["items"]}
    return names[srv.instance(iid)["host_id"]]


def test_running_guest_moves_with_its_disk_and_back_stopped(srv, cluster):
    uris = {h.name: h.uri for h in cluster.hosts()}
    settings = srv.client.get("/clusters/devcluster").json()
    assert settings["trust_shared_storage"] is False and not settings["ha_lockspace"]
    body = {"name": "bm1", "image": "nubis-tiny", "flavor": "m1.tiny", "cluster": "devcluster"}
    resp = srv.client.post("/instances", json={**body, "host": "dev-1"})
    assert resp.status_code == 202, resp.text
    iid = resp.json()["id"]
    assert srv.wait_task(resp.json()["task_id"])["status"] == "succeeded"
    srv.wait_console(iid)
    guest_run(srv, iid, WRITE, uri=uris["dev-1"])
    before = wait_uptime(srv, iid, 3)
    # nothing of it is on dev-2 yet: the hosts share no disks
    assert libvirt_leftovers(iid, uris["dev-2"]) == []

    resp = srv.client.post(f"/instances/{iid}/actions/migrate", json={"host": "dev-2"})
    assert resp.status_code == 202, resp.text
    task = srv.wait_task(resp.json()["task_id"], timeout=300)
    assert task["status"] == "succeeded", task
    moved = srv.instance(iid)
    assert moved["status"] == "running" and moved["task_state"] is None, moved
    assert where(srv, iid) == "dev-2"
    # it did not reboot: its uptime goes on, the new host's log never saw a boot
    assert wait_uptime(srv, iid, before + 3) > before
    assert READY not in srv.console(iid)
    assert guest_run(srv, iid, READ, uri=uris["dev-2"]).strip() == DATA
    # the host it left keeps nothing of it
    assert libvirt_leftovers(iid, uris["dev-1"]) == []

    # stopped, it moves back: its files are copied, then it boots there
    srv.act(iid, "stop")
    resp = srv.client.post(f"/instances/{iid}/actions/migrate", json={"host": "dev-1"})
    assert resp.status_code == 202, resp.text
    assert srv.wait_task(resp.json()["task_id"], timeout=300)["status"] == "succeeded"
    assert where(srv, iid) == "dev-1"
    assert libvirt_leftovers(iid, uris["dev-2"]) == []
    srv.act(iid, "start")
    srv.wait_console(iid)
    assert guest_run(srv, iid, READ, uri=uris["dev-1"]).strip() == DATA

    resp = srv.client.delete(f"/instances/{iid}")
    assert srv.wait_task(resp.json()["task_id"])["status"] == "succeeded"
    for uri in uris.values():
        assert libvirt_leftovers(iid, uri) == []
