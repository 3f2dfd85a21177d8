"""NICs of running instances with real guests: a NIC hot-plugged into a running guest
gets its reserved address by DHCP and reaches its network; a port's security groups
and bandwidth limits change while the guests run; a detached NIC leaves the guest
and gives its address back. Bad requests change nothing.

The network exists only inside this machine; traffic goes only between the tests'
own guests."""

from __future__ import annotations

import re
import subprocess
import time

import pytest

from tests.integration.guest import dhcp_address, guest_run
from tests.integration.test_networks import (
    boot,
    create_network,
    delete,
    nwfilter_exists,
    ping,
)

pytestmark = pytest.mark.integration


def run_task(server, method: str, path: str, **kw) -> dict:
    resp = server.client.request(method, path, **kw)
    assert resp.status_code == 202, resp.text
    body = resp.json()
    task = server.wait_task(body["task_id"])
    assert task["status"] == "succeeded", task
    return body


def nic_names(server, iid: str) -> list[str]:
    out = guest_run(server, iid, "ls /sys/class/net")
    return sorted(n for n in out.split() if n.startswith("eth"))


def wait_nics(server, iid: str, expected: list[str], timeout: float = 30) -> list[str]:
    """The guest's NICs once they are ``expected`` (a hot-plug takes the guest a moment,
    longer on a loaded machine), or as they are at the timeout."""
    deadline = time.monotonic() + timeout
    while (names := nic_names(server, iid)) != expected and time.monotonic() < deadline:
        time.sleep(1)
    return names


def fetch_seconds(server, iid: str, address: str) -> float:
    """Seconds the guest takes to fetch the 1000 KiB the peer serves on port 9000."""
    out = guest_run(
        server,
        iid,
        f"a=$(cut -d' ' -f1 /proc/uptime); n=$(nc {address} 9000 | wc -c); "
        "b=$(cut -d' ' -f1 /proc/uptime); echo FETCHED $n $a $b",
        timeout=120,
    )
    size, start, end = re.search(r"FETCHED (\d+) (\S+) (\S+)", out).groups()
    assert int(size) == 1000 * 1024, out
    return float(end) - float(start)


def kernel_can_shape_traffic() -> bool:
    """Whether this kernel has the traffic control libvirt's ``<bandwidth>`` uses
    (an htb class with an sfq leaf inbound, an ingress police filter outbound),
    tried on a veth pair of our own."""
    a, b = "nbqos0", "nbqos1"
    steps = [
        ["ip", "link", "add", a, "type", "veth", "peer", "name", b],
        ["tc", "qdisc", "add", "dev", a, "root", "handle", "1:", "htb", "default", "1"],
        ["tc", "class", "add", "dev", a, "parent", "1:", "classid", "1:1", "htb", "rate", "1mbit"],
        ["tc", "qdisc", "add", "dev", a, "parent", "1:1", "handle", "2:", "sfq", "perturb", "10"],
        ["tc", "qdisc", "add", "dev", a, "ingress"],
        ["tc", "filter", "add", "dev", a, "parent", "ffff:", "protocol", "all", "u32",
         "match", "u32", "0", "0", "police", "rate", "1mbit", "burst", "10k", "drop",
         "flowid", ":1"],
    ]  # fmt: skip
    try:
        return all(subprocess.run(cmd, capture_output=True).returncode == 0 for cmd in steps)
    finally:
        subprocess.run(["ip", "link", "del", a], capture_output=True)


CAN_SHAPE_TRAFFIC = kernel_can_shape_traffic()


def check_bandwidth_applies_live(server, vm: dict, peer: dict, port: dict) -> None:
    guest_run(server, peer["id"], "dd if=/dev/zero of=/tmp/blob bs=1024 count=1000 2>/dev/null")
    guest_run(server, peer["id"], "nc -ll -p 9000 -e /bin/cat /tmp/blob >/dev/null 2>&1 &")
    free = fetch_seconds(server, vm["id"], "10.238.0.10")
    resp = server.client.put(
        f"/ports/{port['id']}/bandwidth", json={"inbound": {"average": 100, "burst": 32}}
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["bandwidth"] == {"inbound": {"average": 100, "burst": 32}}
    capped = fetch_seconds(server, vm["id"], "10.238.0.10")
    assert capped >= 7, (free, capped)  # 1000 KiB at 100 KiB/s, less the burst
    assert capped > 3 * free, (free, capped)
    assert server.client.put(f"/ports/{port['id']}/bandwidth", json={}).json()["bandwidth"] is None
    assert fetch_seconds(server, vm["id"], "10.238.0.10") < capped / 2


def check_bandwidth_refused_clearly(server, port: dict) -> None:
    """A host whose kernel cannot shape traffic: a clear 409, the port unchanged."""
    before = server.client.get(f"/ports/{port['id']}").json()
    resp = server.client.put(
        f"/ports/{port['id']}/bandwidth", json={"inbound": {"average": 100, "burst": 32}}
    )
    assert resp.status_code == 409, resp.text
    assert "cannot enforce bandwidth limits" in resp.json()["error"]["message"]
    assert server.client.get(f"/ports/{port['id']}").json() == before


def test_nics_come_and_go_live_and_ports_change_live(server):
    net = create_network(server, name="nic-a", mode="nat", subnets=[{"cidr": "10.238.0.0/24"}])
    peer = boot(server, "nic-peer", [{"network": "nic-a", "ip": "10.238.0.10"}])
    vm = boot(server, "nic-vm", [])
    assert dhcp_address(server, peer["id"]) == "10.238.0.10"
    server.wait_console(vm["id"])
    assert nic_names(server, vm["id"]) == []

    # a NIC plugged into the running guest: the address in the answer is the one it gets
    port = run_task(
        server,
        "POST",
        f"/instances/{vm['id']}/ports",
        json={"network": "nic-a", "ip": "10.238.0.20"},
    )
    assert port["ip"] == "10.238.0.20" and port["mac"].startswith("02:4e:42")
    shown = server.client.get(f"/ports/{port['id']}").json()
    assert shown["status"] == "attached" and shown["instance_id"] == vm["id"]
    assert wait_nics(server, vm["id"], ["eth0"]) == ["eth0"]
    guest_run(server, vm["id"], "udhcpc -n -q -i eth0 -s /etc/udhcpc.sh -T 1 -t 10")
    assert dhcp_address(server, vm["id"]) == "10.238.0.20"
    assert ping(server, vm["id"], "10.238.0.10")

    # the peer's port moves to a group that lets in its own members only, and back
    lonely = server.client.post("/security-groups", json={"name": "lonely"}).json()
    peer_port = server.client.get(f"/instances/{peer['id']}/ports").json()[0]
    resp = server.client.put(
        f"/ports/{peer_port['id']}/security-groups", json={"security_groups": ["lonely"]}
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["security_groups"] == [lonely["id"]]
    assert not ping(server, vm["id"], "10.238.0.10")
    resp = server.client.put(
        f"/ports/{peer_port['id']}/security-groups", json={"security_groups": ["default"]}
    )
    assert resp.status_code == 200, resp.text
    assert ping(server, vm["id"], "10.238.0.10")
    assert server.client.delete(f"/security-groups/{lonely['id']}").status_code == 204
    assert not nwfilter_exists(f"nubis-sg-{lonely['id']}")

    # bandwidth: traffic to the guest capped at 100 KiB/s, then not, while it runs
    if CAN_SHAPE_TRAFFIC:
        check_bandwidth_applies_live(server, vm, peer, port)
    else:
        check_bandwidth_refused_clearly(server, port)

    # all of it without a restart
    for inst in (peer, vm):
        assert server.instance(inst["id"])["status"] == "running"
        assert server.console(inst["id"]).count("NUBIS-GUEST-READY") == 1

    # detached: the NIC leaves the guest, the address is free again
    run_task(server, "DELETE", f"/instances/{vm['id']}/ports/{port['id']}")
    assert wait_nics(server, vm["id"], []) == []
    assert server.client.get(f"/ports/{port['id']}").status_code == 404
    ips = [p["ip"] for p in server.client.get(f"/networks/{net['id']}/ports").json()["items"]]
    assert ips == ["10.238.0.10"]
    again = run_task(
        server,
        "POST",
        f"/instances/{vm['id']}/ports",
        json={"network": "nic-a", "ip": "10.238.0.20"},
    )
    assert again["ip"] == "10.238.0.20"

    for inst in (peer, vm):
        delete(server, inst)
    assert server.client.delete(f"/networks/{net['id']}").status_code == 204


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"network": "nowhere"}, 404, "network 'nowhere' not found"),
        ({"network": "nic-b", "ip": "10.239.0.10"}, 409, "already in use"),
        ({"network": "nic-b", "ip": "10.1.1.1"}, 400, "in no subnet"),
        ({"network": "nic-b", "security_groups": ["ghost"]}, 404, "security group 'ghost'"),
        (
            {"network": "nic-b", "bandwidth": {"inbound": {"average": 100, "peak": 10}}},
            400,
            "peak must not be below",
        ),
    ],
)
def test_bad_nic_requests_change_nothing(server, stopped_vm, body, status, message):
    net, vm = stopped_vm
    resp = server.client.post(f"/instances/{vm['id']}/ports", json=body)
    assert resp.status_code == status, resp.text
    assert message in resp.json()["error"]["message"]
    assert server.client.get(f"/networks/{net['id']}/ports").json()["total"] == 1
    inst = server.instance(vm["id"])
    assert inst["task_state"] is None and inst["status"] == "stopped"


def test_bad_port_changes_change_nothing(server, stopped_vm):
    net, vm = stopped_vm
    (port,) = server.client.get(f"/instances/{vm['id']}/ports").json()
    resp = server.client.delete(f"/instances/{vm['id']}/ports/nope")
    assert resp.status_code == 404
    resp = server.client.put(
        f"/ports/{port['id']}/bandwidth", json={"outbound": {"average": 5, "peak": 9}}
    )
    assert resp.status_code == 400 and "outbound.peak" in resp.json()["error"]["message"]
    resp = server.client.put(
        f"/ports/{port['id']}/security-groups", json={"security_groups": ["ghost"]}
    )
    assert resp.status_code == 404
    assert server.client.get(f"/ports/{port['id']}").json() == port


@pytest.fixture(scope="module")
def stopped_vm(server):
    net = create_network(server, name="nic-b", mode="isolated", subnets=[{"cidr": "10.239.0.0/24"}])
    vm = boot(server, "nic-bad", [{"network": "nic-b", "ip": "10.239.0.10"}])
    server.act(vm["id"], "force-stop")
    yield net, vm
    delete(server, vm)
    assert server.client.delete(f"/networks/{net['id']}").status_code == 204


@pytest.mark.skipif(CAN_SHAPE_TRAFFIC, reason="this host's kernel can shape traffic")
def test_limits_the_host_cannot_enforce_stop_the_start_clearly(server, stopped_vm):
    """Limits set on a stopped instance are only applied when it starts; on a host
    whose kernel cannot shape traffic the start fails with the reason, and the
    instance stays stopped and starts again once the limits are gone."""
    net, vm = stopped_vm
    (port,) = server.client.get(f"/instances/{vm['id']}/ports").json()
    resp = server.client.put(f"/ports/{port['id']}/bandwidth", json={"inbound": {"average": 100}})
    assert resp.status_code == 200, resp.text
    resp = server.client.post(f"/instances/{vm['id']}/actions/start")
    assert resp.status_code == 202, resp.text
    task = server.wait_task(resp.json()["task_id"])
    assert task["status"] == "failed" and "cannot enforce bandwidth limits" in task["error"]
    inst = server.instance(vm["id"])
    assert inst["status"] == "stopped" and inst["task_state"] is None
    assert server.client.put(f"/ports/{port['id']}/bandwidth", json={}).status_code == 200
    server.act(vm["id"], "start")
    server.act(vm["id"], "force-stop")
