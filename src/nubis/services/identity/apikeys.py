"""API keys and HMAC-SHA256 signed requests (in the manner of CloudStack's signed API).

A key is an id and a secret, scoped to the project the creating token was scoped to.
The secret is shown once, and kept encrypted (it is needed to check signatures).
A signed request carries three headers:

- ``X-Nubis-Key``: the key id
- ``X-Nubis-Timestamp``: Unix time in seconds
- ``X-Nubis-Signature``: hex HMAC-SHA256 of the canonical request under the secret

The canonical request is in ``signing``. A timestamp more than ``SKEW_SECONDS`` away
from the server's clock, or a signature seen before, is refused.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nubis.db.models import ApiKey, UsedSignature, utcnow
from nubis.db.session import Database
from nubis.services.core.errors import Conflict, Forbidden, NotFoundError, Unauthorized
from nubis.services.core.lookup import validate_name
from nubis.services.core.principal import Principal
from nubis.services.identity import auth, signing
from nubis.services.identity.secrets import SecretBox

SKEW_SECONDS = 300
MAX_KEYS_PER_USER = 20


@dataclass(frozen=True)
class SignedRequest:
    key_id: str
    timestamp: str
    signature: str
    method: str
    path: str
    query: list[tuple[str, str]]
    body_hash: str


def create(session: Session, box: SecretBox, principal: Principal, name: str) -> tuple[ApiKey, str]:
    """A new key for the caller in the caller's project; the secret is returned once.
    A request signed with a key cannot make keys: a leaked key must not be able to
    mint others that outlive its revocation."""
    if principal.api_key_id is not None:
        raise Forbidden("API keys are made with a login token, not with an API key")
    validate_name(name, "API key")
    active = select(func.count()).where(
        ApiKey.user_id == principal.user_id, ApiKey.revoked_at.is_(None)
    )
    count = session.scalar(active) or 0
    if count >= MAX_KEYS_PER_USER:
        raise Conflict(f"at most {MAX_KEYS_PER_USER} active API keys per user")
    secret = secrets.token_urlsafe(32)
    key = ApiKey(
        user_id=principal.user_id,
        project_id=principal.project_id,
        name=name,
        secret_encrypted=box.encrypt({"secret": secret}),
    )
    session.add(key)
    session.flush()
    return key, secret


def own_keys(session: Session, principal: Principal) -> list[ApiKey]:
    return list(
        session.scalars(
            select(ApiKey).where(ApiKey.user_id == principal.user_id).order_by(ApiKey.created_at)
        )
    )


def revoke(session: Session, principal: Principal, key_id: str) -> None:
    key = session.get(ApiKey, key_id)
    if key is None or key.user_id != principal.user_id:
        raise NotFoundError(f"API key {key_id!r} not found")
    key.revoked_at = key.revoked_at or utcnow()


def verify(db: Database, box: SecretBox, req: SignedRequest) -> Principal:
    """The principal behind a correctly signed, fresh, never-seen request; 401 otherwise."""
    now = utcnow()
    try:
        stamp = int(req.timestamp)
    except ValueError:
        raise Unauthorized("X-Nubis-Timestamp must be Unix time in seconds") from None
    if abs(now.timestamp() - stamp) > SKEW_SECONDS:
        raise Unauthorized(
            f"request timestamp is more than {SKEW_SECONDS} s away from the server's clock"
        )
    with db.begin() as s:
        key = s.get(ApiKey, req.key_id)
        if key is None or key.revoked_at is not None:
            raise Unauthorized("unknown or revoked API key")
        secret = box.decrypt(key.secret_encrypted)["secret"]
        canonical = signing.canonical_request(
            req.method, req.path, req.query, req.body_hash, req.timestamp
        )
        if not signing.equal(req.signature.lower(), signing.sign(secret, canonical)):
            raise Unauthorized("signature does not match the request")
        principal = auth.principal_for(s, key.user_id, key.project_id, api_key_id=key.id)
        key.last_used_at = now
    _remember(db, req.signature.lower(), datetime.fromtimestamp(stamp, now.tzinfo))
    return principal


def _remember(db: Database, signature: str, stamped: datetime) -> None:
    """Record the signature, refusing one seen before (housekeeping forgets them once
    their timestamp alone would refuse them)."""
    try:
        with db.begin() as s:
            s.add(
                UsedSignature(
                    signature=signature, expires_at=stamped + timedelta(seconds=2 * SKEW_SECONDS)
                )
            )
    except IntegrityError:
        raise Unauthorized("this signed request was already used (replay)") from None
