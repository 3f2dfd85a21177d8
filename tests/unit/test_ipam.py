"""IP address management: subnet checks, and ports' addresses on SQLite and PostgreSQL,
including many allocations racing for the same subnet."""

from __future__ import annotations

import threading
from ipaddress import IPv4Address

import pytest

from nubis.db.models import Cluster, Network, Port, Project, Subnet, Zone
from nubis.db.session import Database
from nubis.services.core.errors import BadRequest, Conflict
from nubis.services.network import ports
from nubis.services.network.ipam import SubnetRequest, check_disjoint, plan_subnet, random_mac


def test_defaults_gateway_first_host_and_pool_the_rest():
    plan = plan_subnet(SubnetRequest("10.9.0.0/24"), needs_gateway=True)
    assert str(plan.gateway) == "10.9.0.1"
    assert (str(plan.pool_start), str(plan.pool_end)) == ("10.9.0.2", "10.9.0.254")
    assert [str(d) for d in plan.dns_servers] == ["10.9.0.1"]


def test_bridged_subnet_needs_no_gateway():
    plan = plan_subnet(SubnetRequest("10.9.0.0/29"), needs_gateway=False)
    assert plan.gateway is None
    assert (str(plan.pool_start), str(plan.pool_end)) == ("10.9.0.1", "10.9.0.6")


@pytest.mark.parametrize(
    "req,message",
    [
        (SubnetRequest("10.9.0.1/24"), "host bits"),
        (SubnetRequest("10.9.0.0/33"), "not a network"),
        (SubnetRequest("fd00::/64"), "only IPv4"),
        (SubnetRequest("10.9.0.0/30"), "prefix must be"),
        (SubnetRequest("10.9.0.0/24", gateway="10.10.0.1"), "not a host address"),
        (SubnetRequest("10.9.0.0/24", gateway="10.9.0.255"), "not a host address"),
        (SubnetRequest("10.9.0.0/24", gateway="x"), "not an IPv4 address"),
        (SubnetRequest("10.9.0.0/24", pool_start="10.9.0.9", pool_end="10.9.0.5"), "empty"),
        (SubnetRequest("10.9.0.0/24", pool_start="10.9.1.9"), "not a host address"),
        (
            SubnetRequest("10.9.0.0/24", gateway="10.9.0.5", pool_start="10.9.0.2"),
            "inside the allocation pool",
        ),
        (SubnetRequest("10.9.0.0/24", dns_servers=["1.1.1.1"] * 4), "at most 3"),
    ],
)
def test_bad_subnets_are_refused(req, message):
    with pytest.raises(BadRequest, match=message):
        plan_subnet(req, needs_gateway=True)


def test_overlaps_are_found():
    check_disjoint([("a", "10.0.0.0/24"), ("b", "10.0.1.0/24")])
    with pytest.raises(BadRequest, match="overlaps 10.0.0.0/16"):
        check_disjoint([("a", "10.0.0.0/16"), ("b", "10.0.5.0/24")])


def test_macs_are_locally_administered_unicast():
    macs = {random_mac() for _ in range(200)}
    assert len(macs) == 200
    first = int(next(iter(macs)).split(":")[0], 16)
    assert first & 0b10 and not first & 0b01


def network(db: Database, cidr: str, pool: tuple[str, str]) -> str:
    with db.begin() as s:
        s.add(Project(id="p", name="p"))
        s.add(Zone(id="z", name="z"))
        s.flush()
        s.add(Cluster(id="c", name="c", zone_id="z"))
        s.flush()
        s.add(Network(id="n", name="n", project_id="p", cluster_id="c", mode="nat", tag="t1"))
        s.flush()
        s.add(
            Subnet(
                id="s",
                network_id="n",
                cidr=cidr,
                gateway=str(IPv4Address(cidr.split("/")[0]) + 1),
                pool_start=pool[0],
                pool_end=pool[1],
            )
        )
    return "n"


def allocate(db: Database, ip: str | None = None) -> str:
    with db.begin() as s:
        return ports.allocate(s, "p", s.get(Network, "n"), None, ip).ip


def test_addresses_are_handed_out_lowest_first_and_once(db):
    network(db, "10.7.0.0/29", ("10.7.0.2", "10.7.0.6"))
    assert allocate(db, "10.7.0.4") == "10.7.0.4"
    assert [allocate(db) for _ in range(4)] == ["10.7.0.2", "10.7.0.3", "10.7.0.5", "10.7.0.6"]
    with pytest.raises(Conflict, match="no free address"):
        allocate(db)
    with pytest.raises(Conflict, match="already in use"):
        allocate(db, "10.7.0.3")
    with pytest.raises(BadRequest, match="gateway"):
        allocate(db, "10.7.0.1")
    with pytest.raises(BadRequest, match="no subnet"):
        allocate(db, "10.8.0.3")
    with db.begin() as s:  # a deleted port's address is free again
        s.delete(s.query(Port).filter_by(ip="10.7.0.3").one())
    assert allocate(db) == "10.7.0.3"


def test_racing_allocations_never_share_an_address(db):
    network(db, "10.6.0.0/27", ("10.6.0.2", "10.6.0.30"))
    got: list[str] = []
    errors: list[Exception] = []
    start = threading.Barrier(12)

    def worker() -> None:
        start.wait()
        for _ in range(3):
            try:
                got.append(allocate(db))
            except Exception as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # 36 requests for 29 addresses: every address once, the rest refused as full
    assert sorted(got, key=IPv4Address) == [f"10.6.0.{i}" for i in range(2, 31)]
    assert len(errors) == 7 and all(isinstance(e, Conflict) for e in errors), errors
    with db.begin() as s:
        assert s.query(Port).count() == 29
        assert len({p.mac for p in s.query(Port)}) == 29
