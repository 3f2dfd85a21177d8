"""Password hashing (Argon2id), the password policy (length, reuse) and changes."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from nubis import blocking
from nubis.db.models import ApiKey, PasswordHistory, PasswordPolicy, Token, User, utcnow
from nubis.db.session import Database
from nubis.services.core.errors import BadRequest, Conflict

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


def use_hasher(hasher: PasswordHasher) -> None:
    """Hash with other parameters from now on. Only the test suite calls this (cheap
    parameters, so that its thousands of logins take milliseconds); a server always
    hashes with the library's recommended ones."""
    global _hasher, DUMMY_HASH
    _hasher = hasher
    DUMMY_HASH = hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    blocking.check("password hashing")
    return _hasher.hash(password)


def verify(password_hash: str, password: str) -> bool:
    blocking.check("password verification")
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


def current_policy(session: Session) -> PasswordPolicy:
    """The policy (its defaults until the security administrator sets one)."""
    policy = session.get(PasswordPolicy, 1)
    if policy is None:
        policy = PasswordPolicy(
            id=1, min_length=12, history=5, max_failed_logins=5, lockout_seconds=300
        )
    return policy


def set_policy(session: Session, changes: dict[str, int]) -> PasswordPolicy:
    for field, value in changes.items():
        low, high = POLICY_LIMITS[field]
        if not low <= value <= high:
            raise BadRequest(f"{field} must be between {low} and {high}")
    policy = current_policy(session)
    for field, value in changes.items():
        setattr(policy, field, value)
    session.merge(policy)
    session.flush()
    return policy


@dataclass(frozen=True)
class NewPassword:
    """A password the policy allows, hashed: made by ``prepare`` outside any
    transaction, written by ``change`` (or a create) in a short one."""

    password_hash: str
    replaces: str | None  # the hash it was checked against: written only over that one


def prepare(db: Database, username: str, password: str, user_id: str | None = None) -> NewPassword:
    """Check a new password against the policy (too short, the user name, one of the
    user's last ones) and hash it. Slow (Argon2): never inside a transaction."""
    with db.read() as s:
        policy = current_policy(s)
        user = s.get(User, user_id) if user_id is not None else None
        earlier = []
        if user is not None:
            earlier = [user.password_hash] + list(
                s.scalars(
                    select(PasswordHistory.password_hash)
                    .where(PasswordHistory.user_id == user.id)
                    .order_by(PasswordHistory.created_at.desc())
                    .limit(policy.history)
                )
            )
        min_length, history = policy.min_length, policy.history
        current = user.password_hash if user is not None else None
    if len(password) < min_length:
        raise BadRequest(f"the password must have at least {min_length} characters")
    if len(password) > MAX_LENGTH:
        raise BadRequest(f"the password must have at most {MAX_LENGTH} characters")
    if password.lower() == username.lower():
        raise BadRequest("the password must not be the user name")
    if any(verify(h, password) for h in earlier):
        raise BadRequest(f"the password must differ from the last {history + 1} ones")
    return NewPassword(hash_password(password), current)


def change(session: Session, user: User, new: NewPassword) -> None:
    """Write a prepared password; every token and API key of the user ends (a stolen
    key must not outlive the password it was made with)."""
    if user.password_hash != new.replaces:
        raise Conflict(f"the password of {user.username!r} changed meanwhile: try again")
    session.add(PasswordHistory(user_id=user.id, password_hash=user.password_hash))
    session.flush()
    beyond = (  # the entries older than the policy remembers
        select(PasswordHistory.id)
        .where(PasswordHistory.user_id == user.id)
        .order_by(PasswordHistory.created_at.desc())
        .offset(current_policy(session).history)
    )
    session.execute(delete(PasswordHistory).where(PasswordHistory.id.in_(beyond.scalar_subquery())))
    user.password_hash = new.password_hash
    user.password_changed_at = utcnow()
    revoke_all_tokens(session, user.id)
    revoke_all_api_keys(session, user.id)


def revoke_all_tokens(session: Session, user_id: str) -> None:
    session.execute(
        update(Token)
        .where(Token.user_id == user_id, Token.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


def revoke_all_api_keys(session: Session, user_id: str) -> None:
    session.execute(
        update(ApiKey)
        .where(ApiKey.user_id == user_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
