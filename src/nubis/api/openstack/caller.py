"""Who is calling the OpenStack API: the ``X-Auth-Token`` a Keystone login handed out
(a Nubis token scoped to a project), and the native policy entry a route stands for."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import anyio
from fastapi import Depends, Request
from sqlalchemy import ColumnElement, true
from sqlalchemy.orm import QueryableAttribute

from nubis.api import audit_trail
from nubis.api.deps import PlatformDep
from nubis.platform import Platform
from nubis.services.core.errors import NotFoundError, Unauthorized
from nubis.services.core.principal import Principal
from nubis.services.identity import auth, policy

TOKEN_HEADER = "X-Auth-Token"


def _authenticate(platform: Platform, token: str) -> Principal:
    with platform.db.begin() as s:
        return auth.authenticate(s, token)


async def token_principal(request: Request, platform: PlatformDep) -> Principal:
    token = request.headers.get(TOKEN_HEADER)
    if not token:
        raise Unauthorized(f"the request needs a token ({TOKEN_HEADER}); get one from Keystone")
    principal = await anyio.to_thread.run_sync(_authenticate, platform, token)
    audit_trail.note_principal(request.scope, principal)
    return principal


def owned(
    column: ColumnElement[str] | QueryableAttribute[str], principal: Principal
) -> ColumnElement[bool]:
    """Rows of the caller's project (every row for the system administrator)."""
    return true() if principal.all_projects else column == principal.project_id


def check_project(principal: Principal, project_id: str) -> None:
    """A project named in the URL is the token's (the system administrator may name any)."""
    if project_id != principal.project_id and not principal.all_projects:
        raise NotFoundError(f"project {project_id} is not the one your token is scoped to")


def allowed_as(action: str) -> Callable[..., Principal]:
    """A dependency: the caller, allowed only if the native API would allow it
    ``action`` (a key of ``policy.POLICY``, e.g. ``"POST /instances"``)."""
    if action not in policy.POLICY:
        raise ValueError(f"{action!r} is not in the policy table")

    def check(principal: Annotated[Principal, Depends(token_principal)]) -> Principal:
        policy.authorize(principal.roles, action)
        return principal

    check.policy_action = action  # type: ignore[attr-defined]
    return check


def As(action: str) -> object:  # noqa: N802 - reads as a type in route signatures
    """``principal: Principal = As("GET /instances")``."""
    return Depends(allowed_as(action))
