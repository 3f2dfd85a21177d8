"""Scheduler units: capacity arithmetic, each filter, the weighers, the explanation."""

import pytest

from nubis.services.scheduler import explain, filter_hosts
from nubis.services.scheduler.filters import (
    CpuFilter,
    HostStateFilter,
    MaxInstancesFilter,
    MemoryFilter,
    PlacementRequest,
    RuleGroupFilter,
)
from nubis.services.scheduler.state import HostState, Limits
from nubis.services.scheduler.weighers import order


def host(
    name="h1", cpus=2, memory=1000, disk=100, ratio=3.0, mem_ratio=1.0, threshold=0.85, **kw
) -> HostState:
    base = dict(
        id=name,
        name=name,
        cluster_id="c",
        state="up",
        enabled=True,
        maintenance="none",
        virt_type="qemu",
        cpus=cpus,
        memory_mib=memory,
        disk_gib=disk,
        cpu_ratio=ratio,
        memory_ratio=mem_ratio,
        disk_ratio=1.0,
        threshold=threshold,
        max_instances=None,
        weigher="spread",
        alloc_vcpus=0,
        alloc_memory_mib=0,
        alloc_disk_gib=0,
        instance_count=0,
    )
    base.update(kw)
    return HostState(**base)


def req(vcpus=1, memory=100, disk=1, **kw) -> PlacementRequest:
    return PlacementRequest(vcpus=vcpus, memory_mib=memory, disk_gib=disk, **kw)


def test_overcommit_and_threshold_arithmetic():
    # 2 threads x 3.0 = 6 vCPUs overcommitted; x 0.85 = 5.1: at most 5 vCPUs allocated
    lim = Limits.of(2, 3.0, 0.85)
    assert (lim.overcommitted, round(lim.limit, 2)) == (6.0, 5.1)
    assert lim.fits(4, 1) and not lim.fits(5, 1)
    # memory is not overcommitted by default: 1000 MiB x 1.0 x 0.85 = 850 MiB
    mem = Limits.of(1000, 1.0, 0.85)
    assert mem.fits(750, 100) and not mem.fits(751, 100)
    # a threshold of 1.0 admits exactly the overcommitted capacity
    assert Limits.of(2, 3.0, 1.0).fits(5, 1) and not Limits.of(2, 3.0, 1.0).fits(6, 1)
    # 0.85 x 20 = 17 exactly, despite float rounding
    assert Limits.of(20, 1.0, 0.85).fits(16, 1)


def test_cpu_and_memory_filters_refuse_exactly_at_the_limit():
    assert not CpuFilter().reject(host(alloc_vcpus=4), req(vcpus=1))
    assert CpuFilter().reject(host(alloc_vcpus=5), req(vcpus=1))
    assert not MemoryFilter().reject(host(alloc_memory_mib=750), req(memory=100))
    assert MemoryFilter().reject(host(alloc_memory_mib=751), req(memory=100))


@pytest.mark.parametrize(
    "change",
    [
        {"state": "down"},
        {"enabled": False},
        {"maintenance": "entering"},
        {"maintenance": "active"},
    ],
)
def test_host_state_filter(change):
    assert HostStateFilter().reject(host(**change), req())
    assert not HostStateFilter().reject(host(), req())


def test_max_instances_filter():
    assert MaxInstancesFilter().reject(host(max_instances=2, instance_count=2), req())
    assert not MaxInstancesFilter().reject(host(max_instances=2, instance_count=1), req())
    assert not MaxInstancesFilter().reject(host(instance_count=500), req())


def test_rule_group_filter_strict_policies():
    f = RuleGroupFilter()
    members = frozenset({"h1"})
    anti = req(group_policy="anti-affinity", member_host_ids=members)
    assert f.reject(host("h1"), anti) and not f.reject(host("h2"), anti)
    aff = req(group_policy="affinity", member_host_ids=members)
    assert not f.reject(host("h1"), aff) and f.reject(host("h2"), aff)
    first = req(group_policy="affinity")  # no member yet: anywhere
    assert not f.reject(host("h2"), first)
    pinned = req(group_policy="hosts", group_host_ids=frozenset({"h2"}))
    assert f.reject(host("h1"), pinned) and not f.reject(host("h2"), pinned)
    soft = req(group_policy="anti-affinity", group_strict=False, member_host_ids=members)
    assert not f.reject(host("h1"), soft)  # soft: a preference, never a refusal


def test_spread_prefers_the_emptiest_and_pack_the_fullest():
    hosts = [
        host("a", alloc_memory_mib=600),
        host("b", alloc_memory_mib=100),
        host("c", alloc_memory_mib=300),
    ]
    assert [h.name for h in order(hosts, req())] == ["b", "c", "a"]
    packed = [host(h.name, alloc_memory_mib=h.alloc_memory_mib, weigher="pack") for h in hosts]
    assert hosts[0].vcpu_limit == 5 and hosts[0].memory_limit == 850
    assert [h.name for h in order(packed, req())] == ["a", "c", "b"]


def test_soft_rule_groups_are_preferences():
    hosts = [host("a"), host("b", alloc_memory_mib=500)]
    soft_aff = req(group_policy="affinity", group_strict=False, member_host_ids=frozenset({"b"}))
    assert next(order(hosts, soft_aff)).name == "b"
    soft_anti = req(
        group_policy="anti-affinity", group_strict=False, member_host_ids=frozenset({"a"})
    )
    assert next(order(hosts, soft_anti)).name == "b"


def test_the_error_says_which_filter_removed_how_many_hosts():
    hosts = [host("a", state="down"), host("b", alloc_vcpus=5), host("c", alloc_memory_mib=800)]
    passing, removed = filter_hosts(hosts, req())
    assert passing == []
    message = explain(len(hosts), removed)
    assert message == (
        "no host can take this instance: of 3 host(s), host state (up, enabled, not in "
        "maintenance) removed 1, vCPU capacity removed 1, memory capacity removed 1"
    )
