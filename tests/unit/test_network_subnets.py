"""Networks made without subnets (as Neutron makes them) and given their subnets
later, natively and through Neutron's API, on libvirt's test driver: defined on the
host only once they have subnets; refusals change nothing; an interrupted change is
undone at start-up."""

import libvirt
from sqlalchemy import select

from nubis.db.models import Network, Subnet
from tests.unit.test_openstack_api import OS, upload_image

NEUTRON = f"{OS}/network/v2.0"


def _defined(network: dict) -> bool:
    """Is the network defined on the (test driver's) host?"""
    conn = libvirt.open("test:///default")
    try:
        return f"nubis-net-{network['tag']}" in conn.listNetworks() + conn.listDefinedNetworks()
    finally:
        conn.close()


def test_a_network_gets_its_subnets_after_it_is_made(callers, platform, tmp_path):
    member = callers["member"]
    made = member.post("/networks", json={"name": "later", "mode": "isolated"})
    assert made.status_code == 201, made.text
    net = made.json()
    assert (net["state"], net["subnets"]) == ("empty", [])
    assert not _defined(net)

    # no port on a network without addresses
    upload_image(member, tmp_path, "img")
    body = {"name": "vm", "image": "img", "flavor": "m1.tiny", "networks": [{"network": "later"}]}
    refused = member.post("/instances", json=body)
    assert refused.status_code == 409 and "no subnet yet" in refused.text

    # bad subnets change nothing
    url = "/networks/later/subnets"
    assert member.post(url, json={"subnets": []}).status_code == 400
    assert member.post(url, json={"subnets": [{"cidr": "10.88.0.0/33"}]}).status_code == 400
    assert member.get("/networks/later").json()["state"] == "empty"

    added = member.post(url, json={"subnets": [{"cidr": "10.88.0.0/24", "name": "s1"}]})
    assert added.status_code == 201, added.text
    net = added.json()
    assert net["state"] == "active" and _defined(net)
    (subnet,) = net["subnets"]
    assert (subnet["name"], subnet["gateway"], subnet["dhcp"]) == ("s1", "10.88.0.1", True)
    again = member.post(url, json={"subnets": [{"cidr": "10.88.1.0/24"}]})
    assert again.status_code == 409 and "already has its subnets" in again.text

    # another empty network may not take addresses the cluster already routes
    assert member.post("/networks", json={"name": "other", "mode": "nat"}).status_code == 201
    overlap = member.post("/networks/other/subnets", json={"subnets": [{"cidr": "10.88.0.0/25"}]})
    assert overlap.status_code == 409 and "overlap" in overlap.text
    assert member.get("/networks/other").json()["subnets"] == []

    # its last subnet removed: empty again, defined nowhere
    gone = member.delete(f"/networks/later/subnets/{subnet['id']}")
    assert gone.status_code == 204, gone.text
    net = member.get("/networks/later").json()
    assert (net["state"], net["subnets"]) == ("empty", [])
    assert not _defined(net)
    missing = member.delete(f"/networks/later/subnets/{subnet['id']}")
    assert missing.status_code == 404

    # bridging onto a host bridge stays the system administrator's
    bridged = {"name": "br", "mode": "bridged", "host_bridge": "br0"}
    assert member.post("/networks", json=bridged).status_code == 403


def test_neutron_makes_networks_and_subnets(client, callers, platform):
    h = {"X-Auth-Token": callers["member"].token}
    made = client.post(f"{NEUTRON}/networks", headers=h, json={"network": {"name": "os-n"}})
    assert made.status_code == 201, made.text
    net = made.json()["network"]
    assert (net["status"], net["subnets"], net["provider:network_type"]) == ("ACTIVE", [], "nat")
    body = {
        "subnet": {
            "network_id": net["id"],
            "name": "os-s",
            "cidr": "10.89.0.0/24",
            "ip_version": 4,
            "allocation_pools": [{"start": "10.89.0.50", "end": "10.89.0.99"}],
        }
    }
    subnet = client.post(f"{NEUTRON}/subnets", headers=h, json=body)
    assert subnet.status_code == 201, subnet.text
    sub = subnet.json()["subnet"]
    assert (sub["name"], sub["gateway_ip"], sub["network_id"]) == ("os-s", "10.89.0.1", net["id"])
    assert sub["allocation_pools"] == [{"start": "10.89.0.50", "end": "10.89.0.99"}]
    native = callers["member"].get("/networks/os-n").json()
    assert (native["mode"], native["state"], native["subnets"][0]["id"]) == (
        "nat",
        "active",
        sub["id"],
    )
    shown = client.get(f"{NEUTRON}/networks/{net['id']}", headers=h).json()["network"]
    assert shown["subnets"] == [sub["id"]]

    # what Nubis lacks is a clean 501, what is wrong a 400 or 403; nothing is made
    for bad, status in (
        ({"network": {"name": "g", "provider:network_type": "geneve"}}, 501),
        (
            {
                "network": {
                    "name": "v",
                    "provider:network_type": "vxlan",
                    "provider:segmentation_id": 77,
                }
            },
            501,
        ),
        (
            {
                "network": {
                    "name": "l",
                    "provider:network_type": "vlan",
                    "provider:physical_network": "eth1",
                    "provider:segmentation_id": 100,
                }
            },
            403,
        ),
        ({"network": {"name": "s", "shared": True}}, 501),
        ({"network": {"name": "f", "provider:network_type": "flat"}}, 400),
        (
            {
                "network": {
                    "name": "f",
                    "provider:network_type": "flat",
                    "provider:physical_network": "br0",
                }
            },
            403,
        ),
    ):
        resp = client.post(f"{NEUTRON}/networks", headers=h, json=bad)
        assert resp.status_code == status, resp.text
        assert "NeutronError" in resp.json()
    empty = client.post(f"{NEUTRON}/networks", headers=h, json={"network": {"name": "os-e"}})
    six = {"subnet": {"network_id": empty.json()["network"]["id"], "cidr": "fd00::/64"}}
    six["subnet"]["ip_version"] = 6
    assert client.post(f"{NEUTRON}/subnets", headers=h, json=six).status_code == 501
    names = [n["name"] for n in callers["member"].get("/networks").json()["items"]]
    assert sorted(names) == ["os-e", "os-n"]

    assert client.delete(f"{NEUTRON}/subnets/{sub['id']}", headers=h).status_code == 204
    assert callers["member"].get("/networks/os-n").json()["state"] == "empty"
    assert client.delete(f"{NEUTRON}/networks/{net['id']}", headers=h).status_code == 204
    assert callers["member"].get("/networks/os-n").status_code == 404
    other = {"X-Auth-Token": callers["p2-member"].token}
    assert client.delete(f"{NEUTRON}/networks/{net['id']}", headers=other).status_code == 404


def test_subnets_an_interrupted_process_was_adding_are_undone(callers, platform):
    member = callers["member"]
    net = member.post("/networks", json={"name": "cut", "mode": "isolated"}).json()
    with platform.db.begin() as s:  # as a process that died while adding them leaves it
        network = s.get(Network, net["id"])
        network.state = "adding"
        s.add(
            Subnet(
                network_id=network.id,
                cidr="10.90.0.0/24",
                gateway="10.90.0.1",
                dns_servers=[],
                pool_start="10.90.0.2",
                pool_end="10.90.0.254",
            )
        )
    platform.networks.undo_interrupted()
    after = member.get("/networks/cut").json()
    assert (after["state"], after["subnets"]) == ("empty", [])
    with platform.db.begin() as s:
        assert s.scalars(select(Subnet).where(Subnet.network_id == net["id"])).all() == []
