"""Neutron security groups and rules, mapped onto Nubis security groups: IPv4 rules
that let traffic in (``ingress``) or let the ports start it (``egress``); a new
group has Neutron's two default rules (its members in, anything out)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from nubis.api.deps import PlatformDep
from nubis.api.openstack import links
from nubis.api.openstack.caller import As, owned
from nubis.api.openstack.errors import NotSupported
from nubis.db.models import SecurityGroup, SecurityGroupRule
from nubis.services.core.errors import BadRequest, NotFoundError
from nubis.services.core.lookup import paginate
from nubis.services.core.principal import Principal
from nubis.services.network import security_groups
from nubis.services.network.security_groups import RuleRequest

router = APIRouter(prefix="/network/v2.0", tags=["openstack network"])

PROTOCOLS = {None: "any", "tcp": "tcp", "udp": "udp", "icmp": "icmp", "any": "any"}


def rule_view(rule: SecurityGroupRule, project_id: str) -> dict[str, Any]:
    return {
        "id": rule.id,
        "security_group_id": rule.group_id,
        "direction": rule.direction,
        "ethertype": "IPv4",
        "protocol": None if rule.protocol == "any" else rule.protocol,
        "port_range_min": rule.port_min,
        "port_range_max": rule.port_max,
        "remote_ip_prefix": rule.remote_cidr,
        "remote_group_id": rule.remote_group_id,
        "remote_address_group_id": None,
        "normalized_cidr": rule.remote_cidr,
        "description": "",
        "tenant_id": project_id,
        "project_id": project_id,
        "created_at": links.timestamp(rule.created_at),
        "updated_at": links.timestamp(rule.created_at),
        "revision_number": 0,
        "tags": [],
    }


def _rules(session: Session, group: SecurityGroup) -> list[SecurityGroupRule]:
    query = select(SecurityGroupRule).where(SecurityGroupRule.group_id == group.id)
    return list(session.scalars(query.order_by(SecurityGroupRule.created_at)).all())


def group_view(session: Session, group: SecurityGroup) -> dict[str, Any]:
    return {
        "id": group.id,
        "name": group.name,
        "description": group.description,
        "tenant_id": group.project_id,
        "project_id": group.project_id,
        "stateful": True,
        "shared": False,
        "security_group_rules": [rule_view(r, group.project_id) for r in _rules(session, group)],
        "created_at": links.timestamp(group.created_at),
        "updated_at": links.timestamp(group.created_at),
        "revision_number": 0,
        "tags": [],
    }


@router.get("/security-groups")
def list_groups(
    request: Request,
    platform: PlatformDep,
    principal: Annotated[Principal, As("GET /security-groups")],
    paging: links.PagingDep,
    name: str | None = None,
    id: str | None = None,  # noqa: A002 - Neutron's filter name
) -> dict[str, Any]:
    security_groups.ensure_default_in(platform.db, principal.project_id)
    with platform.db.read() as s:
        query = select(SecurityGroup).filter_by(**principal.scope())
        if name:
            query = query.where(SecurityGroup.name == name)
        if id:
            query = query.where(SecurityGroup.id == id)
        page = paginate(s, query, SecurityGroup, paging.page())
        views = [group_view(s, g) for g in page.items]
    more = links.page_links(request, "security_groups", page.items, paging)
    return {"security_groups": views, **more}


def _group(session: Session, principal: Principal, group_id: str) -> SecurityGroup:
    group = session.scalar(select(SecurityGroup).filter_by(id=group_id, **principal.scope()))
    if group is None:
        raise NotFoundError(f"Security group {group_id} does not exist")
    return group


@router.get("/security-groups/{group_id}")
def show_group(
    group_id: str,
    platform: PlatformDep,
    principal: Annotated[Principal, As("GET /security-groups/{ref}")],
) -> dict[str, Any]:
    with platform.db.read() as s:
        return {"security_group": group_view(s, _group(s, principal, group_id))}


class GroupBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    description: str = ""
    stateful: bool = True


class GroupIn(BaseModel):
    security_group: GroupBody


@router.post("/security-groups", status_code=201)
def create_group(
    body: GroupIn,
    platform: PlatformDep,
    principal: Annotated[Principal, As("POST /security-groups")],
) -> dict[str, Any]:
    if not body.security_group.stateful:
        raise NotSupported("Nubis security groups are stateful")
    g = body.security_group
    group = platform.security_groups.create(principal, g.name, g.description)
    with platform.db.begin() as s:
        return {"security_group": group_view(s, s.merge(group))}


@router.delete("/security-groups/{group_id}", status_code=204)
def delete_group(
    group_id: str,
    platform: PlatformDep,
    principal: Annotated[Principal, As("DELETE /security-groups/{ref}")],
) -> Response:
    with platform.db.begin() as s:
        group_id = _group(s, principal, group_id).id
    platform.security_groups.delete(principal, group_id)
    return Response(status_code=204)


@router.get("/security-group-rules")
def list_rules(
    platform: PlatformDep,
    principal: Annotated[Principal, As("GET /security-groups")],
    security_group_id: str | None = None,
    direction: str | None = None,
) -> dict[str, Any]:
    query = (
        select(SecurityGroupRule, SecurityGroup.project_id)
        .join(SecurityGroup, SecurityGroup.id == SecurityGroupRule.group_id)
        .where(owned(SecurityGroup.project_id, principal))
        .order_by(SecurityGroupRule.created_at)
    )
    if security_group_id:
        query = query.where(SecurityGroupRule.group_id == security_group_id)
    if direction:
        query = query.where(SecurityGroupRule.direction == direction)
    with platform.db.read() as s:
        rows = s.execute(query).all()
        return {"security_group_rules": [rule_view(r, pid) for r, pid in rows]}


def _rule(session: Session, principal: Principal, rule_id: str) -> SecurityGroupRule:
    rule = session.get(SecurityGroupRule, rule_id)
    if rule is None or not principal.owns(
        session.scalar(select(SecurityGroup.project_id).where(SecurityGroup.id == rule.group_id))
    ):
        raise NotFoundError(f"Security group rule {rule_id} does not exist")
    return rule


@router.get("/security-group-rules/{rule_id}")
def show_rule(
    rule_id: str,
    platform: PlatformDep,
    principal: Annotated[Principal, As("GET /security-groups/{ref}")],
) -> dict[str, Any]:
    with platform.db.read() as s:
        rule = _rule(s, principal, rule_id)
        group = s.get(SecurityGroup, rule.group_id)
        assert group is not None
        return {"security_group_rule": rule_view(rule, group.project_id)}


class RuleBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    security_group_id: str
    direction: str = "ingress"
    ethertype: str = "IPv4"
    protocol: str | None = None
    port_range_min: int | None = Field(default=None, ge=0, le=65535)
    port_range_max: int | None = Field(default=None, ge=0, le=65535)
    remote_ip_prefix: str | None = None
    remote_group_id: str | None = None


class RuleIn(BaseModel):
    security_group_rule: RuleBody


@router.post("/security-group-rules", status_code=201)
def create_rule(
    body: RuleIn,
    platform: PlatformDep,
    principal: Annotated[Principal, As("POST /security-groups/{ref}/rules")],
) -> dict[str, Any]:
    r = body.security_group_rule
    if r.direction not in ("ingress", "egress"):
        raise BadRequest("direction must be ingress or egress")
    if r.ethertype != "IPv4":
        raise NotSupported("security group rules are IPv4 only")
    protocol = PROTOCOLS.get(r.protocol.lower() if r.protocol else None)
    if protocol is None:
        raise BadRequest("protocol must be tcp, udp, icmp or left out (any)")
    ports = (r.port_range_min, r.port_range_max)
    if protocol == "icmp" and ports != (None, None):
        raise NotSupported("ICMP rules let every ICMP type in: give no type or code")
    req = RuleRequest(
        protocol, ports[0], ports[1], r.remote_ip_prefix, r.remote_group_id, r.direction
    )
    with platform.db.begin() as s:
        group_id = _group(s, principal, r.security_group_id).id
    rule = platform.security_groups.add_rule(principal, group_id, req)
    with platform.db.begin() as s:
        group = s.get(SecurityGroup, group_id)
        assert group is not None
        return {"security_group_rule": rule_view(s.merge(rule), group.project_id)}


@router.delete("/security-group-rules/{rule_id}", status_code=204)
def delete_rule(
    rule_id: str,
    platform: PlatformDep,
    principal: Annotated[Principal, As("DELETE /security-groups/{ref}/rules/{rule_id}")],
) -> Response:
    with platform.db.begin() as s:
        rule = _rule(s, principal, rule_id)
        group_id = rule.group_id
    platform.security_groups.delete_rule(principal, group_id, rule_id)
    return Response(status_code=204)
