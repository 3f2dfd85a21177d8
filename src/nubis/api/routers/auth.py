"""Health and login."""

from __future__ import annotations

from fastapi import APIRouter, Response

from nubis.api.deps import PlatformDep, PrincipalDep
from nubis.api.schemas import TokenIn, TokenOut
from nubis.services import auth

router = APIRouter()


@router.get("/health", tags=["health"])
def health() -> dict[str, str]:
    return {"status": "ok"}


@router.post("/auth/tokens", status_code=201, tags=["auth"])
def create_token(body: TokenIn, platform: PlatformDep) -> TokenOut:
    with platform.db.begin() as s:
        token, expires_at = auth.login(
            s, body.username, body.password, platform.settings.token_ttl_seconds
        )
    return TokenOut(token=token, expires_at=expires_at)


@router.delete("/auth/tokens/current", status_code=204, tags=["auth"])
def revoke_token(principal: PrincipalDep, platform: PlatformDep) -> Response:
    with platform.db.begin() as s:
        auth.revoke(s, principal.token_id)
    return Response(status_code=204)
