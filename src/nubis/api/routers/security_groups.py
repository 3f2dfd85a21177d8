"""Security groups and their rules (inbound allows; the rest is dropped)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from nubis.api.deps import PageDep, PlatformDep, PrincipalDep
from nubis.api.network_schemas import RuleIn, RuleOut, SecurityGroupIn, SecurityGroupOut
from nubis.api.schemas import PageOut
from nubis.db.models import SecurityGroup, SecurityGroupRule
from nubis.services.core.lookup import paginate
from nubis.services.network import security_groups
from nubis.services.network.security_groups import RuleRequest

router = APIRouter(prefix="/security-groups", tags=["security groups"])


def group_out(session: Session, group: SecurityGroup) -> SecurityGroupOut:
    out = SecurityGroupOut.model_validate(group)
    rules = session.scalars(
        select(SecurityGroupRule)
        .where(SecurityGroupRule.group_id == group.id)
        .order_by(SecurityGroupRule.created_at, SecurityGroupRule.id)
    )
    out.rules = [RuleOut.model_validate(r) for r in rules]
    return out


@router.get("")
def list_groups(
    platform: PlatformDep, principal: PrincipalDep, pages: PageDep
) -> PageOut[SecurityGroupOut]:
    security_groups.ensure_default_in(platform.db, principal.project_id)
    with platform.db.read() as s:
        query = select(SecurityGroup).filter_by(**principal.scope())
        page = paginate(s, query, SecurityGroup, pages)
        return PageOut.with_items(page, [group_out(s, g) for g in page.items])


@router.post("", status_code=201)
def create_group(
    body: SecurityGroupIn, platform: PlatformDep, principal: PrincipalDep
) -> SecurityGroupOut:
    """A new group lets in traffic from its own members only."""
    group = platform.security_groups.create(principal, body.name, body.description)
    with platform.db.begin() as s:
        return group_out(s, s.merge(group))


@router.get("/{ref}")
def get_group(ref: str, platform: PlatformDep, principal: PrincipalDep) -> SecurityGroupOut:
    if ref == security_groups.DEFAULT_GROUP:
        security_groups.ensure_default_in(platform.db, principal.project_id)
    with platform.db.read() as s:
        return group_out(s, security_groups.get(s, principal, ref))


@router.delete("/{ref}", status_code=204)
def delete_group(ref: str, platform: PlatformDep, principal: PrincipalDep) -> Response:
    platform.security_groups.delete(principal, ref)
    return Response(status_code=204)


@router.post("/{ref}/rules", status_code=201)
def add_rule(ref: str, body: RuleIn, platform: PlatformDep, principal: PrincipalDep) -> RuleOut:
    """Applied at once to every running port of the group, on every host."""
    rule = platform.security_groups.add_rule(principal, ref, RuleRequest(**body.model_dump()))
    return RuleOut.model_validate(rule)


@router.delete("/{ref}/rules/{rule_id}", status_code=204)
def delete_rule(ref: str, rule_id: str, platform: PlatformDep, principal: PrincipalDep) -> Response:
    platform.security_groups.delete_rule(principal, ref, rule_id)
    return Response(status_code=204)
