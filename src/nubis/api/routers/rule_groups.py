"""Rule groups: affinity, anti-affinity and host pinning for a project's instances."""

from __future__ import annotations

from fastapi import APIRouter, Response
from sqlalchemy import select

from nubis.api.deps import PageDep, PlatformDep, PrincipalDep
from nubis.api.schemas import PageOut, RuleGroupIn, RuleGroupOut
from nubis.db.models import RuleGroup
from nubis.services.compute import rule_groups
from nubis.services.core.lookup import paginate

router = APIRouter(prefix="/rule-groups", tags=["rule groups"])


def _out(session: object, group: RuleGroup) -> RuleGroupOut:
    out = RuleGroupOut.model_validate(group)
    out.members = [i.id for i in rule_groups.members(session, group)]  # type: ignore[arg-type]
    return out


@router.get("")
def list_groups(
    platform: PlatformDep, principal: PrincipalDep, pages: PageDep
) -> PageOut[RuleGroupOut]:
    query = select(RuleGroup).filter_by(**principal.scope())
    with platform.db.read() as s:
        page = paginate(s, query, RuleGroup, pages)
        return PageOut.of(page, RuleGroupOut)


@router.post("", status_code=201)
def create_group(body: RuleGroupIn, platform: PlatformDep, principal: PrincipalDep) -> RuleGroupOut:
    with platform.db.begin() as s:
        group = rule_groups.create(s, principal, body.name, body.policy, body.strict, body.hosts)
        return _out(s, group)


@router.get("/{ref}")
def get_group(ref: str, platform: PlatformDep, principal: PrincipalDep) -> RuleGroupOut:
    with platform.db.read() as s:
        return _out(s, rule_groups.get(s, principal, ref))


@router.delete("/{ref}", status_code=204)
def delete_group(ref: str, platform: PlatformDep, principal: PrincipalDep) -> Response:
    with platform.db.begin() as s:
        rule_groups.delete(s, principal, ref)
    return Response(status_code=204)
