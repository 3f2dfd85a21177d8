"""Password hashing (Argon2id), the password policy (length, reuse) and changes."""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from nubis.db.models import PasswordHistory, PasswordPolicy, Token, User, utcnow
from nubis.services.errors import BadRequest

_hasher = PasswordHasher()  # Argon2id with the library's current recommended parameters
# verifying against this keeps the time of a login for an unknown user the same
DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))
MAX_LENGTH = 1024
POLICY_LIMITS = {
    "min_length": (8, 256),
    "history": (0, 24),
    "max_failed_logins": (1, 100),
    "lockout_seconds": (1, 7 * 24 * 3600),
}


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


def current_policy(session: Session) -> PasswordPolicy:
    policy = session.get(PasswordPolicy, 1)
    if policy is None:
        policy = PasswordPolicy(
            id=1, min_length=12, history=5, max_failed_logins=5, lockout_seconds=300
        )
        session.add(policy)
        session.flush()
    return policy


def set_policy(session: Session, changes: dict[str, int]) -> PasswordPolicy:
    for field, value in changes.items():
        low, high = POLICY_LIMITS[field]
        if not low <= value <= high:
            raise BadRequest(f"{field} must be between {low} and {high}")
    policy = current_policy(session)
    for field, value in changes.items():
        setattr(policy, field, value)
    return policy


def check_new(session: Session, user: User | None, username: str, password: str) -> None:
    """Refuse a password the policy does not allow (too short, the user name, reused)."""
    policy = current_policy(session)
    if len(password) < policy.min_length:
        raise BadRequest(f"the password must have at least {policy.min_length} characters")
    if len(password) > MAX_LENGTH:
        raise BadRequest(f"the password must have at most {MAX_LENGTH} characters")
    if password.lower() == username.lower():
        raise BadRequest("the password must not be the user name")
    if user is None:
        return
    earlier = [user.password_hash] + list(
        session.scalars(
            select(PasswordHistory.password_hash)
            .where(PasswordHistory.user_id == user.id)
            .order_by(PasswordHistory.created_at.desc())
            .limit(policy.history)
        )
    )
    if any(verify(h, password) for h in earlier):
        raise BadRequest(f"the password must differ from the last {policy.history + 1} ones")


def change(session: Session, user: User, password: str) -> None:
    """Set a new password (checked against the policy); every token of the user ends."""
    check_new(session, user, user.username, password)
    session.add(PasswordHistory(user_id=user.id, password_hash=user.password_hash))
    session.flush()
    beyond = (  # the entries older than the policy remembers
        select(PasswordHistory.id)
        .where(PasswordHistory.user_id == user.id)
        .order_by(PasswordHistory.created_at.desc())
        .offset(current_policy(session).history)
    )
    session.execute(delete(PasswordHistory).where(PasswordHistory.id.in_(beyond.scalar_subquery())))
    user.password_hash = hash_password(password)
    user.password_changed_at = utcnow()
    revoke_all_tokens(session, user.id)


def revoke_all_tokens(session: Session, user_id: str) -> None:
    session.execute(
        update(Token)
        .where(Token.user_id == user_id, Token.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
