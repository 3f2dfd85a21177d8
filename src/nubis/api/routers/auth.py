"""Health, login and the caller's own session and password."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from nubis.api import audit_trail
from nubis.api.deps import PlatformDep, PrincipalDep, client_address
from nubis.api.identity_schemas import PasswordChangeIn, WhoAmIOut
from nubis.api.schemas import TokenIn, TokenOut
from nubis.db.models import User
from nubis.services.core.errors import BadRequest
from nubis.services.identity import auth, passwords

router = APIRouter()


@router.get("/health", tags=["health"])
def health() -> dict[str, str]:
    return {"status": "ok"}


@router.post("/auth/tokens", status_code=201, tags=["auth"])
def create_token(body: TokenIn, request: Request, platform: PlatformDep) -> TokenOut:
    """Log in: a bearer token scoped to ``project`` (default: the user's first project).
    Failed attempts count; too many lock the account for the policy's lockout time,
    and too many from one address refuse that address for a while (429)."""
    token, expires_at, principal = auth.login(
        platform.db,
        body.username,
        body.password,
        platform.settings.token_ttl_seconds,
        body.project,
        client_address(request),
        platform.login_throttle,
    )
    audit_trail.note_principal(request.scope, principal)
    return TokenOut(
        token=token,
        expires_at=expires_at,
        project_id=principal.project_id,
        roles=sorted(principal.roles),
    )


@router.delete("/auth/tokens/current", status_code=204, tags=["auth"])
def revoke_token(principal: PrincipalDep, platform: PlatformDep) -> Response:
    """Log out: the token stops working at once."""
    if principal.token_id is None:
        raise BadRequest("a signed request has no token to revoke; revoke the API key")
    with platform.db.begin() as s:
        auth.revoke(s, principal.token_id)
    return Response(status_code=204)


@router.get("/auth/whoami", tags=["auth"])
def whoami(principal: PrincipalDep) -> WhoAmIOut:
    return WhoAmIOut(
        user_id=principal.user_id,
        username=principal.username,
        project_id=principal.project_id,
        project_role=principal.project_role,
        system_role=principal.system_role,
        roles=sorted(principal.roles),
        api_key_id=principal.api_key_id,
    )


@router.put("/auth/password", status_code=204, tags=["auth"])
def change_password(
    body: PasswordChangeIn, request: Request, principal: PrincipalDep, platform: PlatformDep
) -> Response:
    """Change your own password (the policy applies); every token and API key of yours
    ends. A wrong current password counts toward the lockout like a failed login."""
    with platform.db.read() as s:
        user = s.get(User, principal.user_id)
        assert user is not None
    if auth.is_locked(user) or not passwords.verify(user.password_hash, body.current_password):
        with platform.db.begin() as s:
            platform.login_throttle.count_failure(s, client_address(request))
            if not auth.is_locked(user):
                auth.count_failure(s, user.id)
        raise BadRequest("the current password is wrong (or the account is locked)")
    new = passwords.prepare(platform.db, user.username, body.new_password, user.id)
    with platform.db.begin() as s:
        found = s.get(User, principal.user_id)
        assert found is not None
        passwords.change(s, found, new)
    return Response(status_code=204)
