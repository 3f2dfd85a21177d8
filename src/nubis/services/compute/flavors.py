"""Flavors (compute offerings): vCPUs, memory, root disk size and pool, NIC bandwidth
limits."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nubis.db.models import Flavor, Instance
from nubis.services.compute import root_volumes
from nubis.services.core.errors import BadRequest, Conflict
from nubis.services.core.lookup import get_by_id_or_name, validate_name
from nubis.services.network.qos import check_bandwidth

DEFAULT_FLAVORS = (
    ("m1.tiny", 1, 128, 1),
    ("m1.small", 1, 512, 5),
    ("m1.medium", 2, 2048, 20),
    ("m1.large", 4, 8192, 40),
)


def create(
    session: Session,
    name: str,
    vcpus: int,
    memory_mib: int,
    disk_gib: int,
    bandwidth: dict | None = None,
    root_pool: str | None = None,
) -> Flavor:
    validate_name(name, "flavor")
    bandwidth = check_bandwidth(bandwidth)
    if not 1 <= vcpus <= 256:
        raise BadRequest("vcpus must be between 1 and 256")
    if not 16 <= memory_mib <= 4 * 1024 * 1024:
        raise BadRequest("memory_mib must be between 16 and 4194304")
    if not 1 <= disk_gib <= 64 * 1024:
        raise BadRequest("disk_gib must be between 1 and 65536")
    if session.scalar(select(Flavor).where(Flavor.name == name)) is not None:
        raise Conflict(f"a flavor named {name!r} already exists")
    flavor = Flavor(
        name=name,
        vcpus=vcpus,
        memory_mib=memory_mib,
        disk_gib=disk_gib,
        bandwidth=bandwidth,
        root_pool_id=root_volumes.flavor_pool(session, root_pool),
    )
    session.add(flavor)
    session.flush()
    return flavor


def delete(session: Session, ref: str) -> Flavor:
    flavor = get_by_id_or_name(session, Flavor, ref, "flavor")
    users = session.scalar(select(func.count()).where(Instance.flavor_id == flavor.id))
    if users:
        raise Conflict(f"flavor {flavor.name!r} is used by {users} instance(s)")
    session.delete(flavor)
    return flavor


def seed_defaults(session: Session) -> None:
    for name, vcpus, memory_mib, disk_gib in DEFAULT_FLAVORS:
        if session.scalar(select(Flavor).where(Flavor.name == name)) is None:
            session.add(Flavor(name=name, vcpus=vcpus, memory_mib=memory_mib, disk_gib=disk_gib))
