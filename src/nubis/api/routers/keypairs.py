"""Key pairs: SSH public keys for instances (imported, or generated here)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from nubis.api.deps import PlatformDep, PrincipalDep
from nubis.api.network_schemas import KeyPairCreated, KeyPairIn, KeyPairOut
from nubis.services.compute import keypairs

router = APIRouter(prefix="/key-pairs", tags=["key pairs"])


@router.get("")
def list_key_pairs(platform: PlatformDep, principal: PrincipalDep) -> list[KeyPairOut]:
    with platform.db.read() as s:
        return [KeyPairOut.model_validate(k) for k in keypairs.list_pairs(s, principal)]


@router.post("", status_code=201)
def create_key_pair(
    body: KeyPairIn, platform: PlatformDep, principal: PrincipalDep
) -> KeyPairCreated:
    """Import ``public_key``; without one a pair is generated and its private key is
    in this answer only (Nubis does not keep it)."""
    with platform.db.begin() as s:
        pair, private = keypairs.create(s, principal, body.name, body.public_key, body.key_type)
        out = KeyPairOut.model_validate(pair).model_dump()
    return KeyPairCreated(**out, private_key=private)


@router.get("/{ref}")
def get_key_pair(ref: str, platform: PlatformDep, principal: PrincipalDep) -> KeyPairOut:
    with platform.db.read() as s:
        return KeyPairOut.model_validate(keypairs.get(s, principal, ref))


@router.delete("/{ref}", status_code=204)
def delete_key_pair(ref: str, platform: PlatformDep, principal: PrincipalDep) -> Response:
    """Instances already given the key keep it."""
    with platform.db.begin() as s:
        keypairs.delete(s, principal, ref)
    return Response(status_code=204)
