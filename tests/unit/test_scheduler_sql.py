"""The database pre-selects candidates with each filter's SQL condition: on SQLite and
PostgreSQL, every condition must accept exactly the hosts the filter's Python rule
accepts, on random hosts (limits at the edge included) and random requests."""

import random
from datetime import UTC, datetime

import pytest
from sqlalchemy import insert, select

from nubis.db.models import Cluster, Host, Zone
from nubis.db.session import Database
from nubis.services.scheduler import NoValidHost, Scheduler, filter_hosts
from nubis.services.scheduler.filters import FILTERS, PlacementRequest
from nubis.services.scheduler.state import load_host_states
from nubis.services.scheduler.weighers import order


def populate(db: Database, rng: random.Random, hosts: int = 120) -> list[str]:
    now = datetime.now(UTC)
    clusters = [
        dict(
            id=f"c{i}",
            name=f"c{i}",
            zone_id="z",
            cpu_ratio=rng.choice([1.0, 3.0, 2.5]),
            memory_ratio=rng.choice([1.0, 1.5]),
            disk_ratio=rng.choice([1.0, 2.0]),
            disable_threshold=rng.choice([0.85, 1.0, 0.7]),
            max_instances_per_host=rng.choice([None, 3, 5]),
            weigher=rng.choice(["spread", "pack"]),
            created_at=now,
        )
        for i in range(3)
    ]
    rows = []
    for i in range(hosts):
        cpus, memory, disk = rng.choice([2, 4, 20]), rng.choice([1000, 4096]), 100
        rows.append(
            dict(
                id=f"h{i:03d}",
                name=f"h{i:03d}",
                uri=f"test:///default?h={i}",
                cluster_id=rng.choice(["c0", "c1", "c2", None]),
                state=rng.choice(["up", "up", "up", "down"]),
                enabled=rng.random() > 0.1,
                maintenance=rng.choice(["none"] * 8 + ["entering", "active"]),
                virt_type=rng.choice(["kvm", "qemu"]),
                virt_type_override=rng.choice([None, None, "qemu"]),
                cpus=cpus,
                memory_mib=memory,
                disk_gib=disk,
                # allocations near the limits, so the edges are exercised
                alloc_vcpus=rng.randint(0, int(cpus * 3)),
                alloc_memory_mib=rng.randint(0, int(memory * 1.5)),
                alloc_disk_gib=rng.randint(0, disk * 2),
                instance_count=rng.randint(0, 6),
                created_at=now,
            )
        )
    with db.begin() as s:
        s.execute(insert(Zone), [dict(id="z", name="z", created_at=now)])
        s.execute(insert(Cluster), clusters)
        s.execute(insert(Host), rows)
    return [r["id"] for r in rows]


def random_request(rng: random.Random, host_ids: list[str]) -> PlacementRequest:
    members = frozenset(rng.sample(host_ids, rng.randint(0, 4)))
    return PlacementRequest(
        vcpus=rng.randint(1, 8),
        memory_mib=rng.choice([128, 512, 1024, 2048]),
        disk_gib=rng.choice([1, 10, 50]),
        virt_type=rng.choice([None, "kvm", "qemu"]),
        host_id=rng.choice([None] * 6 + host_ids[:2]),
        cluster_id=rng.choice([None, None, "c0", "c1"]),
        exclude_host_ids=frozenset(rng.sample(host_ids, rng.randint(0, 2))),
        group_policy=rng.choice([None, "affinity", "anti-affinity", "hosts"]),
        group_strict=True,
        group_host_ids=frozenset(rng.sample(host_ids, rng.randint(0, 10))),
        member_host_ids=members,
    )


def test_every_filter_condition_accepts_exactly_what_the_filter_accepts(db):
    rng = random.Random(11)
    host_ids = populate(db, rng)
    with db.begin() as s:
        states = {h.id: h for h in load_host_states(s)}
        assert len(states) == len(host_ids)
        for _ in range(60):
            req = random_request(rng, host_ids)
            for f in FILTERS:
                python = {h.id for h in states.values() if not f.reject(h, req)}
                condition = f.where(req)
                if condition is None:
                    assert python == set(states), f"{f.name} removes hosts but has no SQL"
                    continue
                sql = {h.id for h in load_host_states(s, where=[condition])}
                assert sql == python, f"{f.name} disagrees for {req}"


def test_the_fast_path_claims_the_host_the_full_path_would_choose(db):
    """Placement with the database's pre-selection picks the best host of all."""
    rng = random.Random(5)
    host_ids = populate(db, rng)
    scheduler = Scheduler()
    placed = 0
    for _ in range(40):
        req = random_request(rng, host_ids)
        req = PlacementRequest(**{**req.__dict__, "group_policy": None, "host_id": None})
        with db.sessionmaker() as s, s.begin():
            passing, _ = filter_hosts(load_host_states(s), req)
            expected = next(order(passing, req)).id if passing else None
            if expected is None:
                with pytest.raises(NoValidHost):
                    scheduler.place(s, req)
                continue
            chosen = scheduler.place(s, req).id
            assert chosen == expected
            placed += 1
            claimed = s.scalar(select(Host.alloc_vcpus).where(Host.id == chosen))
            assert claimed == states_alloc(passing, chosen) + req.vcpus
            s.rollback()
    assert placed > 10  # the requests are not all impossible


def states_alloc(states, host_id: str) -> int:
    return next(h.alloc_vcpus for h in states if h.id == host_id)
