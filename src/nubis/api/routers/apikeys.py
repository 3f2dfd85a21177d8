"""The caller's own API keys (for HMAC-signed requests)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from nubis.api.deps import PlatformDep, PrincipalDep
from nubis.api.identity_schemas import ApiKeyCreated, ApiKeyIn, ApiKeyOut
from nubis.services.identity import apikeys

router = APIRouter(prefix="/api-keys", tags=["identity"])


@router.get("")
def list_keys(platform: PlatformDep, principal: PrincipalDep) -> list[ApiKeyOut]:
    with platform.db.read() as s:
        return [ApiKeyOut.model_validate(k) for k in apikeys.own_keys(s, principal)]


@router.post("", status_code=201)
def create_key(body: ApiKeyIn, platform: PlatformDep, principal: PrincipalDep) -> ApiKeyCreated:
    """A key scoped to the caller's current project; the secret is in this answer only."""
    with platform.db.begin() as s:
        key, secret = apikeys.create(s, platform.box, principal, body.name)
        return ApiKeyCreated(**ApiKeyOut.model_validate(key).model_dump(), secret=secret)


@router.delete("/{key_id}", status_code=204)
def revoke_key(key_id: str, platform: PlatformDep, principal: PrincipalDep) -> Response:
    """Revoke a key of yours: requests signed with it fail from now on."""
    with platform.db.begin() as s:
        apikeys.revoke(s, principal, key_id)
    return Response(status_code=204)
