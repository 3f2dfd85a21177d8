"""Nova server groups, mapped onto rule groups: affinity and anti-affinity are strict
rule groups, soft-affinity and soft-anti-affinity the non-strict ones."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from nubis.api.deps import PlatformDep
from nubis.api.openstack.caller import As
from nubis.api.openstack.errors import NotSupported
from nubis.db.models import RuleGroup
from nubis.services.compute import rule_groups
from nubis.services.core.errors import BadRequest, NotFoundError
from nubis.services.core.principal import Principal

router = APIRouter(prefix="/compute/v2.1/os-server-groups", tags=["openstack compute"])

# Nova policy -> (rule group policy, strict)
POLICIES = {
    "affinity": ("affinity", True),
    "anti-affinity": ("anti-affinity", True),
    "soft-affinity": ("affinity", False),
    "soft-anti-affinity": ("anti-affinity", False),
}


def nova_policy(group: RuleGroup) -> str:
    return group.policy if group.strict else f"soft-{group.policy}"


def group_view(session: Any, group: RuleGroup) -> dict[str, Any]:
    return {
        "id": group.id,
        "name": group.name,
        "policies": [nova_policy(group)],
        "members": [i.id for i in rule_groups.members(session, group)],
        "metadata": {},
        "project_id": group.project_id,
        "user_id": None,
    }


@router.get("")
def list_server_groups(
    platform: PlatformDep,
    principal: Annotated[Principal, As("GET /rule-groups")],
    all_projects: str | None = None,
) -> dict[str, Any]:
    """The project's groups (all projects' for an administrator who asks); groups that
    pin to hosts have no Nova policy and are not listed."""
    query = select(RuleGroup).where(RuleGroup.policy.in_(("affinity", "anti-affinity")))
    if not (principal.all_projects and all_projects not in (None, "0", "false", "False")):
        query = query.where(RuleGroup.project_id == principal.project_id)
    with platform.db.read() as s:
        rows = s.scalars(query.order_by(RuleGroup.created_at)).all()
        return {"server_groups": [group_view(s, g) for g in rows]}


class GroupBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = Field(max_length=255)
    policies: list[str] | None = None
    policy: str | None = None
    rules: dict[str, Any] | None = None


class GroupIn(BaseModel):
    server_group: GroupBody


@router.post("")
def create_server_group(
    body: GroupIn,
    platform: PlatformDep,
    principal: Annotated[Principal, As("POST /rule-groups")],
) -> dict[str, Any]:
    g = body.server_group
    policies = g.policies if g.policies is not None else ([g.policy] if g.policy else [])
    if len(policies) != 1:
        raise BadRequest("a server group has exactly one policy")
    if policies[0] not in POLICIES:
        raise BadRequest(f"policy must be one of {', '.join(POLICIES)}")
    if g.rules:
        raise NotSupported("server group rules (max_server_per_host) are not supported")
    policy, strict = POLICIES[policies[0]]
    with platform.db.begin() as s:
        group = rule_groups.create(s, principal, g.name, policy, strict)
        return {"server_group": group_view(s, group)}


def _group(session: Any, principal: Principal, group_id: str) -> RuleGroup:
    group = session.scalar(select(RuleGroup).filter_by(id=group_id, **principal.scope()))
    if group is None or group.policy not in ("affinity", "anti-affinity"):
        raise NotFoundError(f"Server group {group_id} could not be found.")
    return group


@router.get("/{group_id}")
def show_server_group(
    group_id: str,
    platform: PlatformDep,
    principal: Annotated[Principal, As("GET /rule-groups/{ref}")],
) -> dict[str, Any]:
    with platform.db.read() as s:
        return {"server_group": group_view(s, _group(s, principal, group_id))}


@router.delete("/{group_id}", status_code=204)
def delete_server_group(
    group_id: str,
    platform: PlatformDep,
    principal: Annotated[Principal, As("DELETE /rule-groups/{ref}")],
) -> Response:
    with platform.db.begin() as s:
        rule_groups.delete(s, principal, _group(s, principal, group_id).id)
    return Response(status_code=204)
