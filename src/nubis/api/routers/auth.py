"""Health, login and the caller's own session and password."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from nubis.api import audit_trail
from nubis.api.deps import PlatformDep, PrincipalDep
from nubis.api.identity_schemas import PasswordChangeIn, WhoAmIOut
from nubis.api.schemas import TokenIn, TokenOut
from nubis.db.models import User
from nubis.services import auth, passwords
from nubis.services.errors import BadRequest

router = APIRouter()


@router.get("/health", tags=["health"])
def health() -> dict[str, str]:
    return {"status": "ok"}


@router.post("/auth/tokens", status_code=201, tags=["auth"])
def create_token(body: TokenIn, request: Request, platform: PlatformDep) -> TokenOut:
    """Log in: a bearer token scoped to ``project`` (default: the user's first project).
    Failed attempts count; too many lock the account for the policy's lockout time."""
    token, expires_at, principal = auth.login(
        platform.db, body.username, body.password, platform.settings.token_ttl_seconds, body.project
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
    body: PasswordChangeIn, principal: PrincipalDep, platform: PlatformDep
) -> Response:
    """Change your own password (the policy applies); every token of yours ends."""
    with platform.db.begin() as s:
        user = s.get(User, principal.user_id)
        assert user is not None
        if not passwords.verify(user.password_hash, body.current_password):
            raise BadRequest("the current password is wrong")
        passwords.change(s, user, body.new_password)
    return Response(status_code=204)
