"""Placement through the services on a control plane of libvirt test:/// hosts:
concurrency of claims, rule groups, spread, capacity. No task worker runs."""

import threading

import pytest
from sqlalchemy import select

from nubis.db.models import Host
from nubis.services.compute import flavors, rule_groups
from nubis.services.compute.instances import InstanceRequest
from nubis.services.core.errors import BadRequest, Conflict
from nubis.services.identity import auth
from nubis.services.inventory import topology
from nubis.services.scheduler import NoValidHost


@pytest.fixture
def platform(control_plane):
    p = control_plane
    for i in (1, 2, 3):
        p.hosts.add(p.db, f"h{i}", f"test:///default?h={i}")
    with p.db.begin() as s:
        topology.update_cluster(s, "default", topology.ClusterSettings(disable_threshold=1.0))
        flavors.create(s, "gig", 1, 1024, 1)
        host_mem = s.scalars(select(Host.memory_mib)).first()
    assert host_mem == 3072  # the test driver's host: 3 x 1024 MiB fit on each
    return p


@pytest.fixture
def principal(platform):
    password = (platform.settings.data_dir / "admin-password").read_text().strip()
    _token, _expiry, principal = auth.login(platform.db, "admin", password, 3600)
    return principal


@pytest.fixture
def image(platform, tmp_path):
    import subprocess

    path = tmp_path / "i.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-f", "qcow2", str(path), "16M"], check=True, capture_output=True
    )
    return platform.images.import_file(platform.db, "img", path, None).name


def create(platform, principal, image, name, **kw):
    with platform.db.begin() as s:
        inst, _ = platform.instances.create(s, principal, InstanceRequest(name, image, "gig", **kw))
        return inst


def hosts_by_name(platform):
    with platform.db.begin() as s:
        return {h.name: h for h in s.scalars(select(Host)).all()}


def test_parallel_creates_never_overcommit(platform, principal, image):
    """Room for exactly 9 (3 hosts x 3): of 24 parallel creates exactly 9 succeed."""
    results: list[str] = []
    barrier = threading.Barrier(24)

    def attempt(i: int) -> None:
        barrier.wait()
        try:
            create(platform, principal, image, f"vm{i}")
            results.append("ok")
        except NoValidHost as exc:
            assert "memory capacity" in exc.message or "filled by concurrent" in exc.message
            results.append("full")

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("ok") == 9 and results.count("full") == 15
    for host in hosts_by_name(platform).values():
        assert host.alloc_memory_mib == 3072 and host.instance_count == 3


def test_spread_places_evenly(platform, principal, image):
    for i in range(6):
        create(platform, principal, image, f"s{i}")
    assert sorted(h.instance_count for h in hosts_by_name(platform).values()) == [2, 2, 2]


def test_pack_fills_one_host_first(platform, principal, image):
    with platform.db.begin() as s:
        topology.update_cluster(s, "default", topology.ClusterSettings(weigher="pack"))
    for i in range(3):
        create(platform, principal, image, f"p{i}")
    assert sorted(h.instance_count for h in hosts_by_name(platform).values()) == [0, 0, 3]


def test_strict_anti_affinity_and_affinity(platform, principal, image):
    with platform.db.begin() as s:
        rule_groups.create(s, principal, "apart", "anti-affinity")
        rule_groups.create(s, principal, "together", "affinity")
    placed = {
        create(platform, principal, image, f"a{i}", rule_group="apart").host_id for i in range(3)
    }
    assert len(placed) == 3
    with pytest.raises(NoValidHost, match="rule group removed 3"):
        create(platform, principal, image, "a4", rule_group="apart")
    pair = {
        create(platform, principal, image, f"t{i}", rule_group="together").host_id for i in range(2)
    }
    assert len(pair) == 1


def test_hosts_policy_pins_and_soft_anti_affinity_overflows(platform, principal, image):
    with platform.db.begin() as s:
        rule_groups.create(s, principal, "pinned", "hosts", hosts=["h2"])
        rule_groups.create(s, principal, "loose", "anti-affinity", strict=False)
    h2 = hosts_by_name(platform)["h2"].id
    assert {
        create(platform, principal, image, f"p{i}", rule_group="pinned").host_id for i in range(2)
    } == {h2}
    loose = [
        create(platform, principal, image, f"l{i}", rule_group="loose").host_id for i in range(4)
    ]
    assert len(set(loose[:3])) == 3 and len(loose) == 4  # the 4th still placed


def test_explicit_host_and_disabled_host(platform, principal, image):
    assert (
        create(platform, principal, image, "x", host="h3").host_id
        == hosts_by_name(platform)["h3"].id
    )
    with platform.db.begin() as s:
        platform.hosts.set_enabled(s, "h3", False)
    with pytest.raises(NoValidHost, match="host state"):
        create(platform, principal, image, "y", host="h3")
    assert create(platform, principal, image, "z").host_id != hosts_by_name(platform)["h3"].id


def test_capacity_reports(platform, principal, image):
    create(platform, principal, image, "c1")
    with platform.db.begin() as s:
        cap = topology.cluster_capacity(s, "default")
        zone = topology.zone_capacity(s, "default")
    assert cap["hosts"] == 3 and cap["instances"] == 1
    assert cap["memory_mib"] == {
        "physical": 9216,
        "overcommitted": 9216,
        "limit": 9216,
        "allocated": 1024,
        "free": 8192,
    }
    assert cap["vcpus"]["overcommitted"] == 3 * 16 * 3.0
    assert zone == cap


def test_rule_group_errors(platform, principal):
    bad = [
        dict(name="g", policy="hosts"),  # no hosts
        dict(name="g", policy="anti-affinity", hosts=["h1"]),  # hosts with another policy
        dict(name="g", policy="sideways"),
        dict(name="bad name", policy="affinity"),
    ]
    for kwargs in bad:
        with pytest.raises(BadRequest), platform.db.begin() as s:
            rule_groups.create(s, principal, **kwargs)
    with platform.db.begin() as s:
        rule_groups.create(s, principal, "g", "affinity")
    with pytest.raises(Conflict, match="already exists"), platform.db.begin() as s:
        rule_groups.create(s, principal, "g", "anti-affinity")
