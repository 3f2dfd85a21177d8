"""Neutron's external networks, routers and floating IPs through the OpenStack facade,
on libvirt's test driver (its host has no network agent: no router can be placed;
routers at work through the `openstack` CLI are in test_openstack_clients)."""

from __future__ import annotations

from tests.unit.test_openstack_api import OS

NEUTRON = f"{OS}/network/v2.0"


def test_external_network_and_floating_ips_through_neutron(client, callers):
    admin = {"X-Auth-Token": callers["system_admin"].token}
    member = {"X-Auth-Token": callers["member"].token}
    body = {"network": {"name": "ext", "router:external": True, "provider:network_type": "flat"}}
    refused = client.post(f"{NEUTRON}/networks", headers=admin, json=body)
    assert refused.status_code == 400  # on which host bridge?
    body["network"]["provider:physical_network"] = "brex"
    assert client.post(f"{NEUTRON}/networks", headers=member, json=body).status_code == 403
    made = client.post(f"{NEUTRON}/networks", headers=admin, json=body)
    assert made.status_code == 201, made.text
    ext = made.json()["network"]
    assert ext["router:external"] is True and ext["provider:network_type"] == "flat"
    pool = {"start": "203.0.113.50", "end": "203.0.113.59"}
    subnet = {"subnet": {"network_id": ext["id"], "cidr": "203.0.113.0/24",
                         "gateway_ip": "203.0.113.1", "enable_dhcp": False,
                         "allocation_pools": [pool]}}  # fmt: skip
    resp = client.post(f"{NEUTRON}/subnets", headers=admin, json=subnet)
    assert resp.status_code == 201, resp.text

    # every project sees the external network (and may not delete it)
    listed = client.get(f"{NEUTRON}/networks", headers=member).json()["networks"]
    assert [n["id"] for n in listed if n["router:external"]] == [ext["id"]]
    assert client.get(f"{NEUTRON}/networks/{ext['id']}", headers=member).status_code == 200

    # a floating IP from its pool; filters; a port that is not there changes nothing
    resp = client.post(
        f"{NEUTRON}/floatingips",
        headers=member,
        json={"floatingip": {"floating_network_id": ext["id"]}},
    )
    assert resp.status_code == 201, resp.text
    fip = resp.json()["floatingip"]
    assert fip["floating_ip_address"] == "203.0.113.50"
    assert (fip["status"], fip["port_id"], fip["router_id"]) == ("DOWN", None, None)
    found = client.get(
        f"{NEUTRON}/floatingips?floating_ip_address=203.0.113.50", headers=member
    ).json()["floatingips"]
    assert [f["id"] for f in found] == [fip["id"]]
    resp = client.put(
        f"{NEUTRON}/floatingips/{fip['id']}",
        headers=member,
        json={"floatingip": {"port_id": "nope"}},
    )
    assert resp.status_code == 404 and resp.json()["NeutronError"]["message"]
    assert (
        client.get(f"{NEUTRON}/floatingips/{fip['id']}", headers=member).json()["floatingip"][
            "port_id"
        ]
        is None
    )
    other = {"X-Auth-Token": callers["p2-member"].token}
    assert client.get(f"{NEUTRON}/floatingips/{fip['id']}", headers=other).status_code == 404
    bad = {"port_forwarding": {"protocol": "tcp", "internal_port_id": "nope", "internal_port": 22,
                               "external_port": 2222}}  # fmt: skip
    resp = client.post(
        f"{NEUTRON}/floatingips/{fip['id']}/port_forwardings", headers=member, json=bad
    )
    assert resp.status_code == 404
    assert client.delete(f"{NEUTRON}/floatingips/{fip['id']}", headers=member).status_code == 204
    assert client.get(f"{NEUTRON}/floatingips", headers=member).json()["floatingips"] == []


def test_routers_refuse_what_nubis_does_not_do(client, callers):
    member = {"X-Auth-Token": callers["member"].token}
    for extra in ({"distributed": True}, {"ha": True}, {"admin_state_up": False},
                  {"routes": [{"destination": "0.0.0.0/0", "nexthop": "10.0.0.1"}]}):  # fmt: skip
        resp = client.post(
            f"{NEUTRON}/routers", headers=member, json={"router": {"name": "r", **extra}}
        )
        assert resp.status_code == 501, (extra, resp.text)
    # no host with a network agent here: nothing is made
    resp = client.post(f"{NEUTRON}/routers", headers=member, json={"router": {"name": "r"}})
    assert resp.status_code == 409 and "network agent" in resp.json()["NeutronError"]["message"]
    assert client.get(f"{NEUTRON}/routers", headers=member).json()["routers"] == []
    assert client.get(f"{NEUTRON}/routers/nope", headers=member).status_code == 404


def test_the_extensions_the_clients_look_up(client, callers):
    member = {"X-Auth-Token": callers["member"].token}
    listed = client.get(f"{NEUTRON}/extensions", headers=member).json()["extensions"]
    aliases = {e["alias"] for e in listed}
    assert {"router", "external-net", "floating-ip-port-forwarding"} <= aliases
    assert client.get(f"{NEUTRON}/extensions/router", headers=member).status_code == 200
    # not offered: the clients then use the calls Nubis has
    missing = client.get(f"{NEUTRON}/extensions/external-gateway-multihoming", headers=member)
    assert missing.status_code == 404
