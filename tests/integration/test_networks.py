"""Networks with real guests: addresses reserved by Nubis are the ones the guests get
by DHCP, guests on one network reach each other, a guest on an isolated network
reaches neither; deleting gives every address and libvirt object back.

The networks exist only inside this machine (libvirt bridges), and the only
traffic sent is between the tests' own guests."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import libvirt
import pytest

from tests.integration.guest import dhcp_address, guest_run

pytestmark = pytest.mark.integration

NET_A = "10.231.0.0/24"
NET_B = "10.232.0.0/24"


@pytest.fixture(scope="module", autouse=True)
def no_filters_left(server):
    """After the module: every group can go (no port uses one), their filters too."""
    yield
    for group in server.client.get("/security-groups").json()["items"]:
        assert server.client.delete(f"/security-groups/{group['id']}").status_code == 204
        assert not nwfilter_exists(f"nubis-sg-{group['id']}")


def create_network(server, **body) -> dict:
    resp = server.client.post("/networks", json=body)
    assert resp.status_code == 201, resp.text
    return resp.json()


def boot(server, name: str, nics: list[dict]) -> dict:
    resp = server.client.post(
        "/instances",
        json={"name": name, "image": "nubis-tiny", "flavor": "m1.tiny", "networks": nics},
    )
    assert resp.status_code == 202, resp.text
    inst = resp.json()
    assert server.wait_task(inst["task_id"])["status"] == "succeeded"
    return inst


def delete(server, inst: dict) -> None:
    resp = server.client.delete(f"/instances/{inst['id']}")
    assert resp.status_code == 202, resp.text
    assert server.wait_task(resp.json()["task_id"])["status"] == "succeeded"


def ping(server, iid: str, address: str) -> bool:
    out = guest_run(server, iid, f"ping -c 3 -W 2 {address}", timeout=60)
    return " 0% packet loss" in out


def libvirt_network(name: str) -> str | None:
    conn = libvirt.open("qemu:///system")
    try:
        return conn.networkLookupByName(name).XMLDesc(0)
    except libvirt.libvirtError:
        return None
    finally:
        conn.close()


def link_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", name], capture_output=True).returncode == 0


def test_guests_get_their_reserved_addresses_and_only_their_network_reaches_them(server):
    net_a = create_network(
        server, name="net-a", mode="nat", subnets=[{"cidr": NET_A, "pool_start": "10.231.0.20"}]
    )
    net_b = create_network(server, name="net-b", mode="isolated", subnets=[{"cidr": NET_B}])
    assert net_a["state"] == "active" and net_a["subnets"][0]["gateway"] == "10.231.0.1"
    assert link_exists(net_a["bridge_name"]) and link_exists(net_b["bridge_name"])

    a1 = boot(server, "net-a1", [{"network": "net-a", "ip": "10.231.0.77"}])
    a2 = boot(server, "net-a2", [{"network": "net-a"}])
    b1 = boot(server, "net-b1", [{"network": "net-b"}])
    ports = {
        i["name"]: server.client.get(f"/instances/{i['id']}/ports").json() for i in (a1, a2, b1)
    }
    assert ports["net-a1"][0]["ip"] == "10.231.0.77"
    assert ports["net-a2"][0]["ip"] == "10.231.0.20"  # the first of the pool
    assert ports["net-b1"][0]["ip"] == "10.232.0.2"

    # what DHCP hands out is exactly what Nubis reserved
    for inst in (a1, a2, b1):
        assert dhcp_address(server, inst["id"]) == ports[inst["name"]][0]["ip"]
        mac = guest_run(server, inst["id"], "cat /sys/class/net/eth0/address").strip()
        assert mac == ports[inst["name"]][0]["mac"]

    assert ping(server, a1["id"], "10.231.0.20")  # same network: reachable
    assert ping(server, a2["id"], "10.231.0.77")
    assert not ping(server, b1["id"], "10.231.0.77")  # isolated: reaches nobody else
    assert not ping(server, a1["id"], "10.232.0.2")
    # ... but its own network's guests (new connections come in through their groups)
    b2 = boot(server, "net-b2", [{"network": "net-b"}])
    assert dhcp_address(server, b2["id"]) == "10.232.0.3"
    assert ping(server, b2["id"], "10.232.0.2")
    delete(server, b2)

    # an address in use cannot be had again; nothing is created by the refusal
    before = server.client.get("/instances").json()["total"]
    resp = server.client.post(
        "/instances",
        json={
            "name": "net-dup",
            "image": "nubis-tiny",
            "flavor": "m1.tiny",
            "networks": [{"network": "net-a", "ip": "10.231.0.77"}],
        },
    )
    assert resp.status_code == 409 and "already in use" in resp.json()["error"]["message"]
    assert server.client.get("/instances").json()["total"] == before
    # a network with ports cannot go
    resp = server.client.delete("/networks/net-a")
    assert resp.status_code == 409 and "port" in resp.json()["error"]["message"]

    for inst in (a1, a2, b1):
        delete(server, inst)
    assert server.client.get("/networks/net-a/ports").json()["total"] == 0
    assert "10.231.0.77" not in (libvirt_network(f"nubis-net-{net_a['tag']}") or "")
    for net in (net_a, net_b):
        assert server.client.delete(f"/networks/{net['id']}").status_code == 204
        assert libvirt_network(f"nubis-net-{net['tag']}") is None
        assert not link_exists(net["bridge_name"])


@pytest.mark.parametrize(
    "body,status,message",
    [
        ({"mode": "nat", "subnets": [{"cidr": "10.233.0.0/24", "gateway": "10.9.0.1"}]}, 400,
         "not a host address"),
        ({"mode": "nat", "subnets": [{"cidr": "10.233.0.5/24"}]}, 400, "host bits"),
        ({"mode": "nat", "subnets": [{"cidr": f"10.233.{i}.0/24"} for i in range(5)]}, 400,
         "at most 4 subnets"),
        ({"mode": "flat", "subnets": [{"cidr": "10.233.0.0/24"}]}, 400, "mode must be"),
        ({"mode": "nat", "subnets": [{"cidr": "10.233.0.0/24"}, {"cidr": "10.233.0.128/25"}]},
         400, "overlaps"),
        ({"mode": "nat", "subnets": [{"cidr": "10.233.0.0/24"}], "host_bridge": "br0"}, 400,
         "no host_bridge"),
        ({"mode": "bridged", "subnets": [{"cidr": "10.233.0.0/24"}]}, 400, "host_bridge"),
        # this machine's kernel has no 802.1Q: the reason, and nothing made
        ({"mode": "vlan", "host_interface": "eth0", "segmentation_id": 100,
          "subnets": [{"cidr": "10.233.0.0/24"}]}, 400, "no 802.1Q VLAN support"),
        ({"mode": "vlan", "segmentation_id": 100}, 400, "host_interface"),
        ({"mode": "vlan", "host_interface": "eth0", "segmentation_id": 4095}, 400,
         "1 to 4094"),
        ({"mode": "nat", "segmentation_id": 7}, 400, "vlan networks only"),
    ],
)  # fmt: skip
def test_bad_networks_are_refused_and_nothing_is_made(server, body, status, message):
    resp = server.client.post("/networks", json={"name": "bad", **body})
    assert resp.status_code == status, resp.text
    assert message in resp.json()["error"]["message"]
    assert server.client.get("/networks/bad").status_code == 404


def test_overlapping_networks_and_bad_nics_are_refused(server):
    create_network(server, name="net-c", mode="isolated", subnets=[{"cidr": "10.234.0.0/24"}])
    resp = server.client.post(
        "/networks",
        json={"name": "net-d", "mode": "nat", "subnets": [{"cidr": "10.234.0.0/16"}]},
    )
    assert resp.status_code == 409 and "overlaps" in resp.json()["error"]["message"]
    before = server.client.get("/instances").json()["total"]
    for nic, status, message in [
        ({"network": "nope"}, 404, "network"),
        ({"network": "net-c", "ip": "10.99.0.5"}, 400, "no subnet"),
        ({"network": "net-c", "ip": "10.234.0.1"}, 400, "gateway"),
        ({"network": "net-c", "ip": "10.234.0.255"}, 400, "not a host address"),
    ]:
        resp = server.client.post(
            "/instances",
            json={"name": "bad-nic", "image": "nubis-tiny", "flavor": "m1.tiny", "networks": [nic]},
        )
        assert resp.status_code == status, resp.text
        assert message in resp.json()["error"]["message"]
    assert server.client.get("/instances").json()["total"] == before
    assert server.client.get("/networks/net-c/ports").json()["total"] == 0
    assert server.client.delete("/networks/net-c").status_code == 204


def security_group(server, name: str) -> dict:
    resp = server.client.post("/security-groups", json={"name": name})
    assert resp.status_code == 201, resp.text
    return resp.json()


def reaches(server, iid: str, address: str, port: int) -> bool:
    """Whether the guest's nc gets the listener's greeting from address:port."""
    out = guest_run(server, iid, f"echo hi | nc -w 3 {address} {port}", timeout=60)
    return "open" in out


def test_security_groups_open_and_close_a_port_live_and_spoofed_traffic_is_dropped(server):
    net = create_network(server, name="net-s", mode="nat", subnets=[{"cidr": "10.235.0.0/24"}])
    web, clients = security_group(server, "web"), security_group(server, "clients")
    ingress = [r["remote_group_id"] for r in web["rules"] if r["direction"] == "ingress"]
    assert ingress == [web["id"]]  # members only
    egress = [(r["protocol"], r["remote_cidr"]) for r in web["rules"] if r["direction"] == "egress"]
    assert egress == [("any", None)]  # anything out
    srv = boot(
        server, "sg-server", [{"network": "net-s", "ip": "10.235.0.10", "security_groups": ["web"]}]
    )
    cli = boot(
        server,
        "sg-client",
        [{"network": "net-s", "ip": "10.235.0.11", "security_groups": ["clients"]}],
    )
    assert dhcp_address(server, srv["id"]) == "10.235.0.10"  # DHCP passes the filters
    assert dhcp_address(server, cli["id"]) == "10.235.0.11"
    guest_run(server, srv["id"], "nc -ll -p 8080 -e /bin/echo open >/dev/null 2>&1 &")
    assert "open" in guest_run(server, srv["id"], "echo hi | nc -w 3 127.0.0.1 8080")

    assert not reaches(server, cli["id"], "10.235.0.10", 8080)  # web lets in web only
    # libvirt deletes its filters' jumps and inserts them again whenever it applies a
    # NIC's rules (any instance starting on the host): in every state in between,
    # the filters hold
    for gone in (["in", "out"], ["in", "out", "in-post"]):
        with libvirt_jumps_removed([f"libvirt-{chain}" for chain in gone]):
            assert not reaches(server, cli["id"], "10.235.0.10", 8080), gone
    assert ping(server, cli["id"], "10.235.0.1")  # outbound is open, answers come back

    resp = server.client.post(
        "/security-groups/web/rules",
        json={"protocol": "tcp", "port_min": 8080, "remote_group": "clients"},
    )
    assert resp.status_code == 201, resp.text
    rule = resp.json()
    assert reaches(server, cli["id"], "10.235.0.10", 8080)
    assert not ping(server, cli["id"], "10.235.0.10")  # only tcp/8080 was opened

    assert server.client.delete(f"/security-groups/web/rules/{rule['id']}").status_code == 204
    assert not reaches(server, cli["id"], "10.235.0.10", 8080)
    # the instances ran through it all: no restart
    for inst in (srv, cli):
        assert server.instance(inst["id"])["status"] == "running"
        assert server.console(inst["id"]).count("NUBIS-GUEST-READY") == 1

    # a guest that takes another address, or another MAC, cannot send
    spoof_ip = "ip addr flush dev eth0; ip addr add 10.235.0.99/24 dev eth0"
    guest_run(server, cli["id"], spoof_ip)
    assert not ping(server, cli["id"], "10.235.0.1")
    honest = "ip addr flush dev eth0; ip addr add 10.235.0.11/24 dev eth0"
    guest_run(server, cli["id"], honest)
    assert ping(server, cli["id"], "10.235.0.1")
    guest_run(
        server,
        cli["id"],
        "ip link set eth0 down; ip link set eth0 address 02:4e:42:ee:ee:ee; ip link set eth0 up; "
        + honest,
    )
    assert not ping(server, cli["id"], "10.235.0.1")

    # a group in use cannot go; once its ports are gone it can, with its filter
    resp = server.client.delete("/security-groups/web")
    assert resp.status_code == 409 and "port" in resp.json()["error"]["message"]
    for inst in (srv, cli):
        delete(server, inst)
    for group in (web, clients):
        assert server.client.delete(f"/security-groups/{group['id']}").status_code == 204
        assert not nwfilter_exists(f"nubis-sg-{group['id']}")
    assert server.client.delete(f"/networks/{net['id']}").status_code == 204


@contextmanager
def libvirt_jumps_removed(chains: list[str]) -> Iterator[None]:
    """This host's FORWARD without libvirt's jumps to these chains, as libvirt leaves
    it for a moment; then the jumps back where libvirt puts them."""
    for chain in chains:
        # libvirt may be between its own delete and insert (an instance of another
        # test starting): a jump already gone is the state wanted
        subprocess.run(["iptables", "-w", "-D", "FORWARD", "-j", chain], capture_output=True)
    try:
        yield
    finally:
        for position, chain in enumerate(["libvirt-in", "libvirt-out", "libvirt-in-post"], 1):
            present = ["iptables", "-w", "-C", "FORWARD", "-j", chain]
            if subprocess.run(present, capture_output=True).returncode != 0:
                rule = ["iptables", "-w", "-I", "FORWARD", str(position), "-j", chain]
                subprocess.run(rule, check=True)


def signed_in(server, username: str, password: str, project: str | None = None) -> httpx.Client:
    """An API client of this user (in ``project``)."""
    body = {"username": username, "password": password, "project": project}
    token = server.client.post("/auth/tokens", json=body)
    assert token.status_code == 201, token.text
    headers = {"Authorization": f"Bearer {token.json()['token']}"}
    return httpx.Client(base_url=server.client.base_url, headers=headers, timeout=120,
                        verify=server.verify())  # fmt: skip


def test_a_deleted_projects_default_group_leaves_no_filter_on_the_host(server):
    security = signed_in(
        server, "security", (server.data_dir / "security-password").read_text().strip()
    )
    assert security.post("/projects", json={"name": "leaving"}).status_code == 201
    password = "a-long-enough-passphrase"
    made = security.post("/users", json={"username": "lena", "password": password})
    assert made.status_code == 201, made.text
    granted = security.put("/projects/leaving/members/lena", json={"role": "member"})
    assert granted.status_code == 200, granted.text
    lena = signed_in(server, "lena", password, "leaving")
    net = lena.post(
        "/networks", json={"name": "own", "mode": "isolated", "subnets": [{"cidr": NET_B}]}
    )
    assert net.status_code == 201, net.text
    body = {"name": "brief", "image": "nubis-tiny", "flavor": "m1.tiny",
            "networks": [{"network": "own"}]}  # fmt: skip
    made = lena.post("/instances", json=body)
    assert made.status_code == 202, made.text
    assert server.wait_task(made.json()["task_id"])["status"] == "succeeded"
    # the instance's NIC is in the project's default group: its filter is on the host
    (group,) = lena.get("/security-groups").json()["items"]
    assert group["name"] == "default" and nwfilter_exists(f"nubis-sg-{group['id']}")
    gone = lena.delete(f"/instances/{made.json()['id']}")
    assert server.wait_task(gone.json()["task_id"])["status"] == "succeeded"
    assert lena.delete(f"/networks/{net.json()['id']}").status_code == 204
    assert security.delete("/projects/leaving").status_code == 204
    assert not nwfilter_exists(f"nubis-sg-{group['id']}")
    assert security.delete("/users/lena").status_code == 204


def nwfilter_exists(name: str) -> bool:
    conn = libvirt.open("qemu:///system")
    try:
        return name in conn.listNWFilters()
    finally:
        conn.close()


@pytest.mark.parametrize(
    "rule,message",
    [
        ({"protocol": "gre"}, "protocol must be"),
        ({"protocol": "tcp", "port_min": 0}, "port_min"),
        ({"protocol": "tcp", "port_min": 90, "port_max": 80}, "port_min"),
        ({"protocol": "icmp", "port_min": 8}, "no ports"),
        ({"protocol": "any", "remote_cidr": "10.0.0.1/8"}, "remote_cidr"),
        ({"protocol": "any", "remote_cidr": "10.0.0.0/8", "remote_group": "default"}, "not both"),
    ],
)
def test_bad_rules_are_refused_and_nothing_changes(server, rule, message):
    before = server.client.get("/security-groups/default").json()["rules"]
    resp = server.client.post("/security-groups/default/rules", json=rule)
    assert resp.status_code == 400, resp.text
    assert message in resp.json()["error"]["message"]
    assert server.client.get("/security-groups/default").json()["rules"] == before
