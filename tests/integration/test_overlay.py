"""Overlay networks on a 3-host devcluster (each host its own network stack, joined by
the underlay bridge): guests of one network on different hosts get their addresses
by DHCP, reach each other by address and by name through the VXLAN tunnel, keep
reaching a neighbour that live-migrates; another network's guest reaches neither;
a forged source address does not cross the tunnel. The migration's ping gap is
printed (and saved under test-artifacts/overlay). Security groups open and close a
port between hosts; a guest HA restarts on another host is reached again; a host
that was down gets the networks' current state when it is back."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from nubis.devcluster.chaos import register_hosts
from nubis.devcluster.hosts import agent_token_file
from tests.integration.guest import dhcp_address, guest_run
from tests.integration.server import cli_runner, running_devcluster, serving

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("NUBIS_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "overlay"
NET_A, NET_B = "10.241.0.0/24", "10.242.0.0/24"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with running_devcluster(tmp_path_factory.mktemp("devcluster"), 3) as c:
        yield c


@pytest.fixture(scope="module")
def srv(cluster, tmp_path_factory):
    with serving(
        tmp_path_factory,
        NUBIS_RECONCILE_INTERVAL_SECONDS="5",
        NUBIS_HOST_DOWN_AFTER_SECONDS="5",
        NUBIS_HA_CHECK_INTERVAL_SECONDS="1",
    ) as s:
        register_hosts(s.client, cluster)
        yield s


def overlay_network(srv, name: str, cidr: str) -> dict:
    body = {"name": name, "mode": "overlay", "cluster": "devcluster", "subnets": [{"cidr": cidr}]}
    resp = srv.client.post("/networks", json=body)
    assert resp.status_code == 201, resp.text
    return resp.json()


def boot(srv, name: str, network: str, host: str, groups=None, ha=False) -> dict:
    nic = {"network": network, **({"security_groups": groups} if groups else {})}
    body = {
        "name": name,
        "image": "nubis-tiny",
        "flavor": "m1.tiny",
        "cluster": "devcluster",
        "host": host,
        "networks": [nic],
        "ha": ha,
    }
    resp = srv.client.post("/instances", json=body)
    assert resp.status_code == 202, resp.text
    inst = resp.json()
    task = srv.wait_task(inst["task_id"])
    assert task["status"] == "succeeded", task.get("error")
    return inst


def uri_of(srv, cluster, iid: str) -> str:
    names = {h["id"]: h["name"] for h in srv.client.get("/hosts").json()["items"]}
    return cluster.host(names[srv.instance(iid)["host_id"]]).uri


def run(srv, cluster, iid: str, command: str, timeout: float = 60) -> str:
    return guest_run(srv, iid, command, uri=uri_of(srv, cluster, iid), timeout=timeout)


def ping(srv, cluster, iid: str, target: str) -> bool:
    return " 0% packet loss" in run(srv, cluster, iid, f"ping -c 3 -W 2 {target}")


def agent_state(cluster, host: str, what: str) -> dict:
    """What a host's agent holds (``overlays`` or ``routers``)."""
    token = agent_token_file(cluster.base).read_text()
    resp = httpx.get(
        f"{cluster.host(host).agent_url}/v1/{what}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    return resp.json()


def agent_overlays(cluster, host: str) -> dict:
    return agent_state(cluster, host, "overlays")


def test_overlay_network_spans_hosts(srv, cluster):
    # the agents refuse a caller without the token
    bare = httpx.get(f"{cluster.host('dev-1').agent_url}/v1/overlays", timeout=10)
    assert bare.status_code == 401

    net_a, net_b = overlay_network(srv, "ov-a", NET_A), overlay_network(srv, "ov-b", NET_B)
    assert net_a["state"] == "active" and net_a["segment_id"] >= 4096
    assert net_b["segment_id"] != net_a["segment_id"]

    a1 = boot(srv, "ov-a1", "ov-a", "dev-1")
    a2 = boot(srv, "ov-a2", "ov-a", "dev-2")
    b1 = boot(srv, "ov-b1", "ov-b", "dev-2")
    ports = {
        i["name"]: srv.client.get(f"/instances/{i['id']}/ports").json()[0] for i in (a1, a2, b1)
    }

    # every host holds the tunnel: flooding to the two others, each port at its host
    addresses = {h.name: h.address for h in cluster.hosts()}
    device = f"nvx-{net_a['bridge_name'].removeprefix('nbr-')}"
    for host in ("dev-1", "dev-2", "dev-3"):
        held = agent_overlays(cluster, host)[device]
        assert held["vni"] == net_a["segment_id"]
        assert sorted(held["peers"]) == sorted(a for h, a in addresses.items() if h != host)
        expected = {
            ports[name]["mac"]: addresses[where]
            for name, where in (("ov-a1", "dev-1"), ("ov-a2", "dev-2"))
            if where != host
        }
        assert held["fdb"] == expected

    # DHCP from whichever host the guest runs on; the tunnel's MTU with it
    for inst in (a1, a2, b1):
        assert dhcp_address(srv, inst["id"], timeout=90) == ports[inst["name"]]["ip"]
    assert "mtu 1450" in run(srv, cluster, a1["id"], "ip link show eth0")

    # across hosts, by address and by name; the other network reaches neither
    assert ping(srv, cluster, a1["id"], ports["ov-a2"]["ip"])
    assert ping(srv, cluster, a2["id"], ports["ov-a1"]["ip"])
    assert ping(srv, cluster, a1["id"], "ov-a2")
    assert not ping(srv, cluster, b1["id"], ports["ov-a2"]["ip"])
    assert not ping(srv, cluster, b1["id"], ports["ov-a1"]["ip"])

    # a forged source address does not cross the tunnel (the port's filter drops it)
    run(srv, cluster, a1["id"], "ip addr add 10.241.0.250/24 dev eth0")
    forged = run(srv, cluster, a1["id"], f"ping -c 3 -W 2 -I 10.241.0.250 {ports['ov-a2']['ip']}")
    assert " 0 packets received" in forged or "100% packet loss" in forged, forged

    # a neighbour pings a2 every 0.1 s while it live-migrates to the third host
    run(srv, cluster, a1["id"], f"ping -i 0.1 {ports['ov-a2']['ip']} > /tmp/ping.log 2>&1 &")
    time.sleep(2)
    resp = srv.client.post(f"/instances/{a2['id']}/actions/migrate", json={"host": "dev-3"})
    assert resp.status_code == 202, resp.text
    assert srv.wait_task(resp.json()["task_id"])["status"] == "succeeded"
    time.sleep(4)
    out = run(srv, cluster, a1["id"], "killall ping; cat /tmp/ping.log")
    seqs = [int(s) for s in re.findall(r"seq=(\d+)", out)]
    assert seqs, out
    gap = max((b - a for a, b in zip(seqs, seqs[1:], strict=False)), default=1) * 0.1
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "migration-gap.txt").write_text(
        f"longest ping gap during migration: {gap:.1f} s\n"
    )
    print(f"\nlongest ping gap during the live migration: {gap:.1f} s")
    assert gap <= 2.0, out
    assert (
        agent_overlays(cluster, "dev-1")[device]["fdb"][ports["ov-a2"]["mac"]] == addresses["dev-3"]
    )
    assert ping(srv, cluster, a1["id"], "ov-a2")

    # deleting: the instances, then the networks leave every host
    for inst in (a1, a2, b1):
        resp = srv.client.delete(f"/instances/{inst['id']}")
        assert srv.wait_task(resp.json()["task_id"])["status"] == "succeeded"
    for name in ("ov-a", "ov-b"):
        assert srv.client.delete(f"/networks/{name}").status_code == 204
    for host in ("dev-1", "dev-2", "dev-3"):
        assert agent_overlays(cluster, host) == {}


def reaches(srv, cluster, iid: str, address: str, port: int = 8080) -> bool:
    return "open" in run(srv, cluster, iid, f"echo hi | nc -w 3 {address} {port}")


def wait_until(what: str, check, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(1)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


def test_groups_ha_and_a_host_back_across_hosts(srv, cluster):
    net = overlay_network(srv, "ov-c", "10.243.0.0/24")
    for group in ("ov-web", "ov-clients"):
        assert srv.client.post("/security-groups", json={"name": group}).status_code == 201
    web = boot(srv, "ov-web1", "ov-c", "dev-1", groups=["ov-web"], ha=True)
    cli = boot(srv, "ov-cli1", "ov-c", "dev-2", groups=["ov-clients"])
    web_ip = srv.client.get(f"/instances/{web['id']}/ports").json()[0]["ip"]
    for inst in (web, cli):
        dhcp_address(srv, inst["id"], timeout=90)
    listen = "nc -ll -p 8080 -e /bin/echo open >/dev/null 2>&1 &"
    run(srv, cluster, web["id"], listen)

    # a rule opens the port across hosts, and closing it closes it
    assert not reaches(srv, cluster, cli["id"], web_ip)
    resp = srv.client.post(
        "/security-groups/ov-web/rules",
        json={"protocol": "tcp", "port_min": 8080, "remote_group": "ov-clients"},
    )
    assert resp.status_code == 201, resp.text
    assert reaches(srv, cluster, cli["id"], web_ip)
    rule = resp.json()["id"]
    assert srv.client.delete(f"/security-groups/ov-web/rules/{rule}").status_code == 204
    assert not reaches(srv, cluster, cli["id"], web_ip)
    resp = srv.client.post(
        "/security-groups/ov-web/rules",
        json={"protocol": "tcp", "port_min": 8080, "remote_group": "ov-clients"},
    )
    assert resp.status_code == 201, resp.text

    # egress: without its "anything out" rule, a group's ports start only what its
    # egress rules allow (the answers to what came in still leave)
    rules = srv.client.get("/security-groups/ov-clients").json()["rules"]
    (anything_out,) = [r for r in rules if r["direction"] == "egress"]
    url = f"/security-groups/ov-clients/rules/{anything_out['id']}"
    assert srv.client.delete(url).status_code == 204
    assert not reaches(srv, cluster, cli["id"], web_ip)
    out_8080 = {
        "direction": "egress",
        "protocol": "tcp",
        "port_min": 8080,
        "remote_group": "ov-web",
    }
    resp = srv.client.post("/security-groups/ov-clients/rules", json=out_8080)
    assert resp.status_code == 201, resp.text
    assert reaches(srv, cluster, cli["id"], web_ip)
    assert not ping(srv, cluster, cli["id"], web_ip)  # ICMP is not allowed out
    anything = {"direction": "egress", "protocol": "any"}
    assert srv.client.post("/security-groups/ov-clients/rules", json=anything).status_code == 201
    url = f"/security-groups/ov-clients/rules/{resp.json()['id']}"
    assert srv.client.delete(url).status_code == 204  # ov-web is named by no rule again

    # its host dies: HA restarts it on another host, where its neighbour reaches it
    hosts = {h["name"]: h["id"] for h in srv.client.get("/hosts").json()["items"]}
    cluster.host("dev-1").kill()
    # the instance's host changes when its restart begins: the failover task says
    # when (and whether) it has finished
    failover = wait_until(
        "the failover of dev-1",
        lambda: next(
            (
                t
                for t in srv.client.get("/tasks", params={"resource_id": hosts["dev-1"]}).json()[
                    "items"
                ]
                if t["kind"] == "host.failover"
            ),
            None,
        ),
        timeout=120,
    )
    done = srv.wait_task(failover["id"], timeout=180)
    moved = srv.instance(web["id"])
    assert done["status"] == "succeeded", (done, moved)
    assert moved["status"] == "running" and moved["task_state"] is None, moved
    assert moved["host_id"] != hosts["dev-1"], moved
    srv.wait_console(web["id"])
    run(srv, cluster, web["id"], listen)
    assert reaches(srv, cluster, cli["id"], "ov-web1")

    # the dead host comes back: it gets the network and where every port now is
    cluster.host("dev-1").start(cluster.shared)
    srv.wait_field("/hosts/dev-1", "state", "up", timeout=60)
    addresses = {h.name: h.address for h in cluster.hosts()}
    names = {v: k for k, v in hosts.items()}
    ports = {i["name"]: srv.client.get(f"/instances/{i['id']}/ports").json()[0] for i in (web, cli)}
    device = f"nvx-{net['tag']}"
    expected = {
        ports["ov-web1"]["mac"]: addresses[names[moved["host_id"]]],
        ports["ov-cli1"]["mac"]: addresses["dev-2"],
    }
    wait_until(
        "dev-1's overlay state",
        lambda: agent_overlays(cluster, "dev-1").get(device, {}).get("fdb") == expected,
        timeout=60,
    )

    for inst in (web, cli):
        resp = srv.client.delete(f"/instances/{inst['id']}")
        assert srv.wait_task(resp.json()["task_id"])["status"] == "succeeded"
    for group in ("ov-web", "ov-clients"):
        assert srv.client.delete(f"/security-groups/{group}").status_code == 204
    assert srv.client.delete("/networks/ov-c").status_code == 204


# -- routers, floating IPs, port forwarding ---------------------------------------------
OUTSIDE_SERVER = """
import socket, sys
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", 9000)); srv.listen(5); srv.settimeout(120)
conn, peer = srv.accept(); conn.sendall(b"seen " + peer[0].encode() + b"\\n"); conn.close()
"""


@pytest.fixture
def outside(cluster):
    """A namespace on the external segment standing for the world outside: it is the
    external network's upstream gateway (172.31.<offset>.1)."""
    ns, veth = f"nubisout{cluster.offset}", f"nubiso{cluster.offset}"
    address = f"172.31.{cluster.offset}.1"
    subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    subprocess.run(["ip", "netns", "add", ns], check=True)
    subprocess.run(
        ["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns],
        check=True,
    )
    subprocess.run(
        ["ip", "link", "set", veth, "master", f"nubisex{cluster.offset}", "up"], check=True
    )
    for args in (["addr", "add", f"{address}/24", "dev", "eth0"], ["link", "set", "eth0", "up"],
                 ["link", "set", "lo", "up"]):  # fmt: skip
        subprocess.run(["ip", "-n", ns, *args], check=True)
    yield ns, address
    subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def from_outside(ns: str, address: str, port: int) -> str:
    proc = subprocess.run(
        ["ip", "netns", "exec", ns, "busybox", "nc", "-w", "3", address, str(port)],
        input="hi\n", capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    return proc.stdout


def agent_routers(cluster, host: str) -> dict:
    return agent_state(cluster, host, "routers")


def test_router_joins_networks_and_reaches_outside(srv, cluster, outside, tmp_path):
    ns, upstream = outside
    prefix = f"172.31.{cluster.offset}"
    c = srv.client
    ext = {"name": "ext", "mode": "external", "cluster": "devcluster", "host_bridge": "brex",
           "subnets": [{"cidr": f"{prefix}.0/24", "gateway": upstream,
                        "pool_start": f"{prefix}.100", "pool_end": f"{prefix}.199"}]}  # fmt: skip
    resp = c.post("/networks", json=ext)
    assert resp.status_code == 201, resp.text
    assert resp.json()["state"] == "active"
    for name, cidr in (
        ("r-a", "10.244.0.0/24"),
        ("r-b", "10.245.0.0/24"),
        ("r-c", "10.246.0.0/24"),
    ):
        overlay_network(srv, name, cidr)

    # bad input changes nothing: an unknown external network, a gateway on a tenant one
    resp = c.post(
        "/routers", json={"name": "r1", "cluster": "devcluster", "external_network": "nope"}
    )
    assert resp.status_code == 404, resp.text
    resp = c.post(
        "/routers", json={"name": "r1", "cluster": "devcluster", "external_network": "r-a"}
    )
    assert resp.status_code == 400 and "not an external" in resp.text, resp.text
    assert c.get("/routers").json()["items"] == []

    # the CLI, as docs/networking.md shows it
    nubis = cli_runner(srv, tmp_path / "token")
    password = (srv.data_dir / "admin-password").read_text().strip()
    nubis("login", "--username", "admin", "--password", password)
    made = nubis("router", "create", "r1", "--external-network", "ext", "--host", "dev-1",
                 "--cluster", "devcluster", "-f", "json")  # fmt: skip
    router = json.loads(made.stdout)
    assert router["host_name"] == "dev-1" and router["state"] == "active"
    assert router["gateway_ip"].startswith(f"{prefix}.1")
    assert "router r1 is 10.244.0." in nubis("router", "add-interface", "r1", "r-a").stdout
    resp = c.post("/routers/r1/interfaces", json={"network": "r-b"})
    assert resp.status_code == 201, resp.text
    assert c.post("/routers/r1/interfaces", json={"network": "r-a"}).status_code == 409
    assert c.post("/routers/r1/interfaces", json={"network": "ext"}).status_code == 400
    namespaces = agent_routers(cluster, "dev-1")
    assert len(namespaces) == 1, namespaces
    (held,) = namespaces.values()
    assert held["default_route"] == upstream
    assert sorted(sum(held["legs"].values(), [])) == sorted(
        [
            f"{router['gateway_ip']}/24",
            *(f"{p['ip']}/24" for p in c.get("/routers/r1").json()["interfaces"]),
        ]
    )

    assert c.post("/security-groups", json={"name": "r-web"}).status_code == 201
    resp = c.post("/security-groups/r-web/rules", json={"protocol": "tcp", "port_min": 8080})
    assert resp.status_code == 201, resp.text
    a1 = boot(srv, "r-a1", "r-a", "dev-2", groups=["r-web"])
    b1 = boot(srv, "r-b1", "r-b", "dev-3", groups=["r-web"])
    c1 = boot(srv, "r-c1", "r-c", "dev-2")
    ports = {i["name"]: c.get(f"/instances/{i['id']}/ports").json()[0] for i in (a1, b1, c1)}
    for inst in (a1, b1, c1):
        assert dhcp_address(srv, inst["id"], timeout=90) == ports[inst["name"]]["ip"]

    # the router joins its networks; the network it does not join reaches neither
    assert ping(srv, cluster, a1["id"], ports["r-b1"]["ip"])
    assert ping(srv, cluster, b1["id"], ports["r-a1"]["ip"])
    assert not ping(srv, cluster, c1["id"], ports["r-a1"]["ip"])

    # out through source NAT: the outside sees the router's external address
    server = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-c", OUTSIDE_SERVER],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(1)
        out = run(srv, cluster, a1["id"], f"echo hi | nc -w 5 {upstream} 9000")
        assert f"seen {router['gateway_ip']}" in out, out
    finally:
        server.kill()
        server.wait()

    # a floating IP reaches a1; port forwarding reaches b1; a removed one reaches nothing
    listen = "nc -ll -p 8080 -e /bin/echo open >/dev/null 2>&1 &"
    for inst in (a1, b1):
        run(srv, cluster, inst["id"], listen)
    resp = c.post("/floating-ips", json={"network": "ext", "port": ports["r-a1"]["id"]})
    assert resp.status_code == 201, resp.text
    fip = resp.json()
    assert fip["fixed_ip"] == ports["r-a1"]["ip"] and fip["router_id"] == router["id"]
    assert "open" in from_outside(ns, fip["address"], 8080)

    resp = c.post("/floating-ips", json={"network": "ext"})
    assert resp.status_code == 201, resp.text
    fwd_ip = resp.json()
    bad = {
        "protocol": "sctp",
        "external_port": 2222,
        "port": ports["r-b1"]["id"],
        "internal_port": 8080,
    }
    assert c.post(f"/floating-ips/{fwd_ip['id']}/port-forwardings", json=bad).status_code == 400
    bad = {**bad, "protocol": "tcp", "port": ports["r-c1"]["id"]}  # r-c has no router
    assert c.post(f"/floating-ips/{fwd_ip['id']}/port-forwardings", json=bad).status_code == 409
    good = {**bad, "port": ports["r-b1"]["id"]}
    resp = c.post(f"/floating-ips/{fwd_ip['id']}/port-forwardings", json=good)
    assert resp.status_code == 201, resp.text
    assert "open" in from_outside(ns, fwd_ip["address"], 2222)
    assert "open" not in from_outside(ns, fwd_ip["address"], 8080)  # only the forwarded port

    # the network node dies: a change made meanwhile is kept, and its router gets the
    # current state when it is back
    cluster.host("dev-1").kill()
    resp = c.post(
        f"/floating-ips/{fwd_ip['id']}/port-forwardings", json={**good, "external_port": 2223}
    )
    assert resp.status_code == 201, resp.text
    assert c.get("/routers/r1").json()["state"] == "error"
    assert "open" not in from_outside(ns, fip["address"], 8080)
    # started again once the control plane has fenced it (fencing a devcluster host
    # kills it: a host started before that would be killed under its own start)
    srv.wait_field("/hosts/dev-1", "state", "down", timeout=90)
    cluster.host("dev-1").start(cluster.shared)
    srv.wait_field("/hosts/dev-1", "state", "up", timeout=90)
    wait_until("the router back", lambda: c.get("/routers/r1").json()["state"] == "active", 90)
    assert "open" in from_outside(ns, fwd_ip["address"], 2223)
    assert "open" in from_outside(ns, fip["address"], 8080)

    assert c.delete(f"/floating-ips/{fip['id']}").status_code == 204
    assert "open" not in from_outside(ns, fip["address"], 8080)

    # tearing down: what a router carries must go first; then everything leaves dev-1
    assert c.delete("/routers/r1").status_code == 409
    assert c.delete("/routers/r1/interfaces/r-b").status_code == 409  # the forwarding uses it
    for inst in (a1, b1, c1):
        resp = c.delete(f"/instances/{inst['id']}")
        assert srv.wait_task(resp.json()["task_id"])["status"] == "succeeded"
    # the deleted instance's port forwarding went with it; the address stays
    assert c.get(f"/floating-ips/{fwd_ip['id']}/port-forwardings").json() == []
    (held,) = agent_routers(cluster, "dev-1").values()
    assert f"{fwd_ip['address']}/32" not in sum(held["legs"].values(), [])
    assert c.delete(f"/floating-ips/{fwd_ip['id']}").status_code == 204
    for name in ("r-a", "r-b"):
        assert c.delete(f"/routers/r1/interfaces/{name}").status_code == 204
    assert c.delete("/routers/r1").status_code == 204
    assert agent_routers(cluster, "dev-1") == {}
    for name in ("r-a", "r-b", "r-c", "ext"):
        assert c.delete(f"/networks/{name}").status_code == 204, name
    assert c.delete("/security-groups/r-web").status_code == 204
