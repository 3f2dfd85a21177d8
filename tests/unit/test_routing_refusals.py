"""Routers, external networks and floating IPs refuse bad requests and change
nothing (on libvirt's test driver: its host has no network agent, so no router can
be placed there; what routers do on real hosts is in test_overlay)."""

from __future__ import annotations

EXT = {
    "name": "ext",
    "mode": "external",
    "host_bridge": "brex",
    "subnets": [{"cidr": "203.0.113.0/24", "gateway": "203.0.113.1",
                 "pool_start": "203.0.113.100", "pool_end": "203.0.113.101"}],
}  # fmt: skip


def test_external_networks_are_made_by_system_administrators(callers):
    member, admin = callers["member"], callers["system_admin"]
    assert member.post("/networks", json=EXT).status_code == 403
    assert admin.post("/networks", json={**EXT, "host_bridge": None}).status_code == 400
    two = {**EXT, "subnets": [*EXT["subnets"], {"cidr": "198.51.100.0/24"}]}
    assert admin.post("/networks", json=two).status_code == 400
    made = admin.post("/networks", json=EXT)
    assert made.status_code == 201, made.text
    assert made.json()["state"] == "active" and made.json()["subnets"][0]["dhcp"] is False
    # every project sees it; no instance has a NIC on it
    assert "ext" in [n["name"] for n in member.get("/networks").json()["items"]]


def test_routers_and_floating_ips_refuse_and_change_nothing(callers):
    member, admin = callers["member"], callers["system_admin"]
    assert admin.post("/networks", json=EXT).status_code == 201
    own = {"name": "own", "mode": "nat", "subnets": [{"cidr": "10.77.0.0/24"}]}
    assert member.post("/networks", json=own).status_code == 201

    # no host with a network agent: no router, nothing recorded
    resp = member.post("/routers", json={"name": "r1", "external_network": "ext"})
    assert resp.status_code == 409 and "network agent" in resp.text, resp.text
    assert member.post("/routers", json={"name": "r1", "host": "fake"}).status_code == 403
    resp = member.post("/routers", json={"name": "r1", "external_network": "own"})
    assert resp.status_code == 400 and "not an external network" in resp.text
    # another project's network is not found, as a name nobody uses: nothing tells
    # the caller it exists
    other = callers["p2-member"]
    hidden = {"name": "hidden", "mode": "nat", "subnets": [{"cidr": "10.78.0.0/24"}]}
    assert other.post("/networks", json=hidden).status_code == 201
    for ref in ("hidden", "nobody"):
        resp = member.post("/routers", json={"name": "r1", "external_network": ref})
        assert resp.status_code == 404 and "not found" in resp.text, resp.text
        resp = member.post("/floating-ips", json={"network": ref})
        assert resp.status_code == 404, resp.text
    assert member.post("/routers", json={"name": "bad name!"}).status_code == 400
    assert member.get("/routers").json()["items"] == []

    # floating IPs: only on an external network, while its pool lasts
    resp = member.post("/floating-ips", json={"network": "own"})
    assert resp.status_code == 400, resp.text
    first = member.post("/floating-ips", json={"network": "ext"})
    assert first.status_code == 201, first.text
    assert first.json()["address"] == "203.0.113.100" and first.json()["fixed_port_id"] is None
    taken = member.post("/floating-ips", json={"network": "ext", "address": "203.0.113.100"})
    assert taken.status_code == 409
    assert member.post("/floating-ips", json={"network": "ext"}).status_code == 201
    full = member.post("/floating-ips", json={"network": "ext"})
    assert full.status_code == 409 and "no free address" in full.text
    fip = first.json()["id"]

    # a port that does not exist, or is not an instance's: nothing changes
    resp = member.put(f"/floating-ips/{fip}/port", json={"port": "no-such-port"})
    assert resp.status_code == 404
    bad = {"protocol": "sctp", "external_port": 22, "port": "x", "internal_port": 22}
    assert member.post(f"/floating-ips/{fip}/port-forwardings", json=bad).status_code == 400
    bad = {**bad, "protocol": "tcp", "external_port": 70000}
    assert member.post(f"/floating-ips/{fip}/port-forwardings", json=bad).status_code == 400
    assert member.get(f"/floating-ips/{fip}/port-forwardings").json() == []
    assert member.get(f"/floating-ips/{fip}").json()["fixed_port_id"] is None

    # another project sees none of it
    assert callers["p2-member"].get(f"/floating-ips/{fip}").status_code == 404
    assert callers["p2-member"].get("/floating-ips").json()["items"] == []

    # the external network is not deleted while floating IPs hold its addresses
    assert admin.delete("/networks/ext").status_code == 409
    for item in member.get("/floating-ips").json()["items"]:
        assert member.delete(f"/floating-ips/{item['id']}").status_code == 204
    assert admin.delete("/networks/ext").status_code == 204


def test_a_gateway_move_cut_short_is_finished_at_start_up(callers, platform):
    """A process that died moving a router's gateway left both external legs: at
    start-up the one the router's row names stays, the other's address is freed."""
    from sqlalchemy import select

    from nubis.db.models import Host, Network, Port, Router
    from nubis.db.models.routing import ROUTER_GATEWAY
    from nubis.services.network.ports import allocate

    admin = callers["system_admin"]
    assert admin.post("/networks", json=EXT).status_code == 201
    other = {**EXT, "name": "ext2", "subnets": [{"cidr": "198.51.100.0/24"}]}
    assert admin.post("/networks", json=other).status_code == 201
    with platform.db.begin() as s:
        old_net = s.scalar(select(Network).where(Network.name == "ext"))
        new_net = s.scalar(select(Network).where(Network.name == "ext2"))
        router = Router(
            name="r", project_id=old_net.project_id, cluster_id=old_net.cluster_id,
            host_id=s.scalar(select(Host.id)), tag="0badc0de", external_network_id=new_net.id,
        )  # fmt: skip
        s.add(router)
        s.flush()
        legs = []
        for network in (old_net, new_net):
            port = allocate(s, router.project_id, network, None)
            port.device_owner, port.router_id = ROUTER_GATEWAY, router.id
            legs.append(port.id)
    platform.routers.undo_interrupted()
    with platform.db.read() as s:
        assert s.get(Port, legs[0]) is None  # the old network's address is free again
        assert s.get(Port, legs[1]) is not None
