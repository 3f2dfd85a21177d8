"""Request dependencies: the platform, the caller (bearer token), role checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from nubis.platform import Platform
from nubis.services import auth
from nubis.services.auth import Principal
from nubis.services.errors import Forbidden, Unauthorized

_bearer = HTTPBearer(auto_error=False)


def get_platform(request: Request) -> Platform:
    return request.app.state.platform


PlatformDep = Annotated[Platform, Depends(get_platform)]


def get_principal(
    platform: PlatformDep,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if creds is None or creds.scheme.lower() != "bearer":
        raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
    with platform.db.begin() as s:
        return auth.authenticate(s, creds.credentials)


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require_admin(principal: PrincipalDep) -> Principal:
    if principal.system_role != "admin":
        raise Forbidden("this operation needs the system administrator role")
    return principal


AdminDep = Annotated[Principal, Depends(require_admin)]


@dataclass(frozen=True)
class PageParams:
    """``limit``, ``offset`` and ``marker`` (id of the last item seen) of a list request."""

    limit: int = 100
    offset: int = 0
    marker: str | None = None


PageDep = Annotated[PageParams, Depends()]
