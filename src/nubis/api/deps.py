"""Request dependencies: the platform, the caller (bearer token, signed request, or
the web console's session cookie with its CSRF token) and the policy check every
authenticated route goes through."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from nubis.api import audit_trail, web_session
from nubis.platform import Platform
from nubis.services.core.errors import Unauthorized
from nubis.services.core.lookup import PageRequest
from nubis.services.core.principal import Principal
from nubis.services.identity import apikeys, auth, policy, signing

_bearer = HTTPBearer(auto_error=False)


def get_platform(request: Request) -> Platform:
    return request.app.state.platform


PlatformDep = Annotated[Platform, Depends(get_platform)]


def client_address(request: Request) -> str | None:
    """The address the request came from (the TCP peer: the proxy's, behind one)."""
    return request.client.host if request.client is not None else None


def route_action(request: Request) -> str:
    """The policy key of the matched route: ``"POST /instances/{ref}/actions/{action}"``."""
    route = request.scope.get("route")
    return policy.action_key(request.method, getattr(route, "path", request.url.path))


async def _signed(request: Request, platform: Platform) -> Principal:
    headers = request.headers
    missing = [h for h in (signing.TIMESTAMP_HEADER, signing.SIGNATURE_HEADER) if h not in headers]
    if missing:
        raise Unauthorized(f"a signed request needs the headers {', '.join(missing)}")
    content_type = headers.get("content-type", "").split(";")[0].strip()
    if content_type == "application/octet-stream":
        payload = signing.UNSIGNED_PAYLOAD  # streamed uploads are not held in memory
    else:
        payload = signing.body_hash(await request.body())
    signed = apikeys.SignedRequest(
        key_id=headers[signing.KEY_HEADER],
        timestamp=headers[signing.TIMESTAMP_HEADER],
        signature=headers[signing.SIGNATURE_HEADER],
        method=request.method,
        path=request.url.path,
        query=list(request.query_params.multi_items()),
        body_hash=payload,
    )
    return await anyio.to_thread.run_sync(apikeys.verify, platform.db, platform.box, signed)


def _bearer_principal(platform: Platform, token: str) -> Principal:
    with platform.db.read() as s:
        return auth.authenticate(s, token)


async def get_principal(
    request: Request,
    platform: PlatformDep,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """Authenticate the caller, then allow the route only to the roles the policy names."""
    if signing.KEY_HEADER in request.headers:
        principal = await _signed(request, platform)
    elif creds is not None and creds.scheme.lower() == "bearer":
        principal = await anyio.to_thread.run_sync(_bearer_principal, platform, creds.credentials)
    elif (session := request.cookies.get(web_session.SESSION_COOKIE)) is not None:
        principal = await anyio.to_thread.run_sync(_bearer_principal, platform, session)
        if request.method not in web_session.SAFE_METHODS:
            presented = request.headers.get(web_session.CSRF_HEADER)
            web_session.check_csrf(request.app.state.csrf_key, session, presented)
    else:
        raise Unauthorized(
            "missing bearer token (Authorization: Bearer <token>) or signed-request headers"
        )
    audit_trail.note_principal(request.scope, principal)
    policy.authorize(principal.roles, route_action(request))
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


PageDep = Annotated[PageRequest, Depends()]
