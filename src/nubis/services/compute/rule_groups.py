"""Rule groups (server groups): affinity, anti-affinity, or pinning VMs to hosts."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nubis.db.models import Host, Instance, RuleGroup
from nubis.services.core.errors import BadRequest, Conflict
from nubis.services.core.lookup import get_by_id_or_name, validate_name
from nubis.services.core.principal import Principal

POLICIES = ("affinity", "anti-affinity", "hosts")


def get(session: Session, principal: Principal, ref: str) -> RuleGroup:
    return get_by_id_or_name(session, RuleGroup, ref, "rule group", **principal.scope())


def create(
    session: Session,
    principal: Principal,
    name: str,
    policy: str,
    strict: bool = True,
    hosts: list[str] | None = None,
) -> RuleGroup:
    validate_name(name, "rule group")
    if policy not in POLICIES:
        raise BadRequest(f"policy must be one of {', '.join(POLICIES)}")
    host_ids: list[str] = []
    if policy == "hosts":
        if not hosts:
            raise BadRequest("a 'hosts' rule group needs at least one host")
        host_ids = sorted({get_by_id_or_name(session, Host, h, "host").id for h in hosts})
    elif hosts:
        raise BadRequest(f"hosts can only be given with policy 'hosts', not {policy!r}")
    exists = session.scalar(
        select(RuleGroup).where(
            RuleGroup.project_id == principal.project_id, RuleGroup.name == name
        )
    )
    if exists is not None:
        raise Conflict(f"a rule group named {name!r} already exists")
    group = RuleGroup(
        name=name,
        project_id=principal.project_id,
        policy=policy,
        strict=strict,
        host_ids=host_ids,
        version=0,
    )
    session.add(group)
    session.flush()
    return group


def members(session: Session, group: RuleGroup) -> list[Instance]:
    return list(session.scalars(select(Instance).where(Instance.rule_group_id == group.id)))


def delete(session: Session, principal: Principal, ref: str) -> None:
    group = get(session, principal, ref)
    count = session.scalar(select(func.count()).where(Instance.rule_group_id == group.id))
    if count:
        raise Conflict(f"rule group {group.name!r} still has {count} member(s)")
    session.delete(group)
