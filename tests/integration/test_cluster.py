"""A 3-host devcluster managed by Nubis: placement, rule groups, migration."""

import time

import libvirt
import pytest

from tests.integration.guest import wait_uptime
from tests.integration.server import READY, NubisServer, libvirt_leftovers, running_devcluster

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with running_devcluster(tmp_path_factory.mktemp("devcluster"), 3) as c:
        yield c


@pytest.fixture(scope="module")
def srv(cluster, tmp_path_factory):
    s = NubisServer(
        tmp_path_factory.mktemp("nubis-cluster") / "data",
        NUBIS_RECONCILE_INTERVAL_SECONDS="5",
        NUBIS_HOST_DOWN_AFTER_SECONDS="3",
        NUBIS_HA_CHECK_INTERVAL_SECONDS="1",
    ).start()
    s.dev1_uri = cluster.host("dev-1").uri  # the hosts' addresses depend on the slot
    assert (
        s.client.post("/clusters", json={"name": "dc", "trust_shared_storage": True}).status_code
        == 201
    )
    for host in cluster.hosts():
        resp = s.client.post("/hosts", json={"name": host.name, "uri": host.uri, "cluster": "dc"})
        assert resp.status_code == 201, resp.text
    yield s
    s.stop()


def create(srv, name, **extra):
    resp = srv.client.post(
        "/instances",
        json={"name": name, "image": "nubis-tiny", "flavor": "m1.tiny", "cluster": "dc", **extra},
    )
    assert resp.status_code == 202, resp.text
    return resp.json()


def delete_all(srv, instances):
    tasks = [srv.client.delete(f"/instances/{i['id']}").json()["task_id"] for i in instances]
    for task_id in tasks:
        assert srv.wait_task(task_id)["status"] == "succeeded"
    for inst in instances:
        assert libvirt_leftovers(inst["id"], srv.dev1_uri) == []


def host_names(srv):
    return {h["id"]: h["name"] for h in srv.client.get("/hosts").json()["items"]}


def placed(srv, instances):
    names = host_names(srv)
    return [names[srv.instance(i["id"])["host_id"]] for i in instances]


def test_six_instances_spread_two_per_host(srv):
    made = [create(srv, f"spread-{i}") for i in range(6)]
    for inst in made:
        assert srv.wait_task(inst["task_id"])["status"] == "succeeded"
    where = placed(srv, made)
    assert sorted(where.count(h) for h in ("dev-1", "dev-2", "dev-3")) == [2, 2, 2]
    cap = srv.client.get("/clusters/dc/capacity").json()
    assert cap["instances"] == 6 and cap["memory_mib"]["allocated"] == 6 * 128
    delete_all(srv, made)


def test_rule_groups_on_real_hosts(srv):
    assert (
        srv.client.post(
            "/rule-groups", json={"name": "apart", "policy": "anti-affinity"}
        ).status_code
        == 201
    )
    assert (
        srv.client.post("/rule-groups", json={"name": "pair", "policy": "affinity"}).status_code
        == 201
    )
    apart = [create(srv, f"apart-{i}", rule_group="apart") for i in range(3)]
    fourth = srv.client.post(
        "/instances",
        json={
            "name": "apart-3",
            "image": "nubis-tiny",
            "flavor": "m1.tiny",
            "rule_group": "apart",
            "cluster": "dc",
        },
    )
    assert fourth.status_code == 409
    assert "rule group removed 3" in fourth.json()["error"]["message"]
    pair = [create(srv, f"pair-{i}", rule_group="pair") for i in range(2)]
    for inst in apart + pair:
        assert srv.wait_task(inst["task_id"])["status"] == "succeeded"
    assert len(set(placed(srv, apart))) == 3
    assert len(set(placed(srv, pair))) == 1
    delete_all(srv, apart + pair)


def test_live_migration_keeps_the_guest_running(srv):
    inst = create(srv, "mover", host="dev-1")
    assert srv.wait_task(inst["task_id"])["status"] == "succeeded"
    iid = inst["id"]
    srv.wait_console(iid)
    before = wait_uptime(srv, iid, 5)
    resp = srv.client.post(f"/instances/{iid}/actions/migrate", json={})
    assert resp.status_code == 202, resp.text
    task = srv.wait_task(resp.json()["task_id"])
    assert task["status"] == "succeeded", task
    moved = srv.instance(iid)
    assert moved["status"] == "running" and moved["task_state"] is None
    assert host_names(srv)[moved["host_id"]] in ("dev-2", "dev-3")
    # the console on the new host carries on counting: no reboot happened
    after = wait_uptime(srv, iid, before + 5)
    assert after > before
    assert READY not in srv.console(iid)  # the new host's log never saw a boot
    hosts = {h["name"]: h for h in srv.client.get("/hosts").json()["items"]}
    assert hosts["dev-1"]["instance_count"] == 0
    assert hosts[host_names(srv)[moved["host_id"]]]["instance_count"] == 1

    # cold migration of the stopped instance, to an explicit host, then it boots there
    srv.act(iid, "stop")
    target = "dev-1"
    resp = srv.client.post(f"/instances/{iid}/actions/migrate", json={"host": target})
    assert srv.wait_task(resp.json()["task_id"])["status"] == "succeeded"
    assert host_names(srv)[srv.instance(iid)["host_id"]] == target
    srv.act(iid, "start")
    srv.wait_console(iid)
    delete_all(srv, [inst])


def test_cancelled_migration_leaves_the_guest_running_where_it_was(srv):
    inst = create(srv, "cancelled", host="dev-3")
    assert srv.wait_task(inst["task_id"])["status"] == "succeeded"
    iid = inst["id"]
    srv.wait_console(iid)
    before = wait_uptime(srv, iid, 3)
    counts = {h["name"]: h["instance_count"] for h in srv.client.get("/hosts").json()["items"]}
    # 1 MiB/s: the guest's memory takes many seconds to copy, time enough to cancel
    resp = srv.client.post(
        f"/instances/{iid}/actions/migrate", json={"host": "dev-1", "max_bandwidth_mib_s": 1}
    )
    assert resp.status_code == 202, resp.text
    task_id = resp.json()["task_id"]
    deadline = time.monotonic() + 60
    while srv.client.get(f"/tasks/{task_id}").json()["progress"] < 1:
        assert time.monotonic() < deadline, "the migration never made progress"
        time.sleep(0.3)
    resp = srv.client.post(f"/instances/{iid}/actions/cancel-migration")
    assert resp.status_code == 202, resp.text
    task = srv.wait_task(task_id)
    assert task["status"] == "failed"
    assert "cancel" in task["error"].lower(), task
    stayed = srv.instance(iid)
    assert stayed["status"] == "running" and stayed["task_state"] is None
    assert host_names(srv)[stayed["host_id"]] == "dev-3"
    assert wait_uptime(srv, iid, before + 5) > before  # it never stopped
    # the target's claim is released and nothing of the instance is left there
    after = {h["name"]: h["instance_count"] for h in srv.client.get("/hosts").json()["items"]}
    assert after == counts
    assert not defined_on(srv.dev1_uri, iid)
    delete_all(srv, [inst])


def defined_on(uri: str, instance_id: str) -> bool:
    conn = libvirt.open(uri)
    try:
        conn.lookupByUUIDString(instance_id)
        return True
    except libvirt.libvirtError:
        return False
    finally:
        conn.close()


def test_migration_refusals(srv):
    inst = create(srv, "stay", host="dev-2")
    assert srv.wait_task(inst["task_id"])["status"] == "succeeded"
    iid = inst["id"]
    cases = [
        ({"host": "local"}, 400, "different clusters"),
        ({"host": "dev-2"}, 400, "already on host"),
        ({"host": "nope"}, 404, "host 'nope' not found"),
        ({"max_downtime_ms": 0}, 400, "max_downtime_ms"),
        ({"max_bandwidth_mib_s": 0}, 400, "max_bandwidth_mib_s"),
    ]
    for body, status, fragment in cases:
        resp = srv.client.post(f"/instances/{iid}/actions/migrate", json=body)
        assert resp.status_code == status, resp.text
        assert fragment in resp.json()["error"]["message"]
    resp = srv.client.post(f"/instances/{iid}/actions/cancel-migration")
    assert resp.status_code == 409
    assert srv.instance(iid)["task_state"] is None  # nothing was changed
    delete_all(srv, [inst])


def wait_host(srv, name: str, **expected) -> dict:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        host = srv.client.get(f"/hosts/{name}").json()
        if all(host[k] == v for k, v in expected.items()):
            return host
        time.sleep(0.3)
    raise AssertionError(f"host {name}: {host}, expected {expected}")


def test_maintenance_empties_a_host_and_its_instances_keep_running(srv):
    pair = [create(srv, f"drain-{i}", host="dev-1") for i in range(2)]
    for inst in pair:
        assert srv.wait_task(inst["task_id"])["status"] == "succeeded"
        srv.wait_console(inst["id"])
    resp = srv.client.post("/hosts/dev-1/actions/maintenance")
    assert resp.status_code == 202, resp.text
    assert srv.client.get("/hosts/dev-1").json()["maintenance"] in ("entering", "active")
    # no new placement on it meanwhile
    refused = srv.client.post(
        "/instances",
        json={"name": "late", "image": "nubis-tiny", "flavor": "m1.tiny", "host": "dev-1"},
    )
    assert refused.status_code == 409 and "host state" in refused.json()["error"]["message"]
    task = srv.wait_task(resp.json()["task_id"], timeout=300)
    assert task["status"] == "succeeded", task
    host = wait_host(srv, "dev-1", maintenance="active")
    assert host["instance_count"] == 0
    for inst in pair:
        moved = srv.instance(inst["id"])
        assert moved["status"] == "running"
        assert host_names(srv)[moved["host_id"]] in ("dev-2", "dev-3")
    assert srv.client.post("/hosts/dev-1/actions/exit-maintenance").json()["maintenance"] == "none"
    delete_all(srv, pair)


def test_evacuate_a_dead_host_only_when_confirmed(srv, cluster):
    inst = create(srv, "survivor", host="dev-3")
    assert srv.wait_task(inst["task_id"])["status"] == "succeeded"
    iid = inst["id"]
    srv.wait_console(iid)
    refused = srv.client.post("/hosts/dev-3/actions/evacuate", json={"confirm_host_down": True})
    assert refused.status_code == 409 and "only a host that is down" in refused.text
    cluster.host("dev-3").kill()
    wait_host(srv, "dev-3", state="down")
    unconfirmed = srv.client.post("/hosts/dev-3/actions/evacuate", json={})
    assert unconfirmed.status_code == 400 and "confirm_host_down" in unconfirmed.text
    resp = srv.client.post("/hosts/dev-3/actions/evacuate", json={"confirm_host_down": True})
    assert resp.status_code == 202
    assert srv.wait_task(resp.json()["task_id"], timeout=180)["status"] == "succeeded"
    moved = srv.instance(iid)
    assert moved["status"] == "running"
    assert host_names(srv)[moved["host_id"]] in ("dev-1", "dev-2")
    srv.wait_console(iid)  # it booted again on its new host
    # the dead host comes back: its stale copy of the domain is removed, never started
    cluster.host("dev-3").start(cluster.shared)
    wait_host(srv, "dev-3", state="up")

    def stale_on_dev3() -> list[str]:  # the root disk is shared: it is not stale
        return [
            x
            for x in libvirt_leftovers(iid, cluster.host("dev-3").uri)
            if not x.startswith("nubis-disks/")
        ]

    deadline = time.monotonic() + 30
    while stale_on_dev3() and time.monotonic() < deadline:
        time.sleep(1)
    assert stale_on_dev3() == []
    assert srv.instance(iid)["status"] == "running"
    delete_all(srv, [inst])
