"""Users, password login (Argon2id) and revocable bearer tokens."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from nubis.db.models import Membership, Project, Token, User, utcnow
from nubis.services.errors import Conflict, Unauthorized

_hasher = PasswordHasher()  # Argon2id with the library's current recommended parameters
# verifying against this keeps the time of a login for an unknown user the same
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))

DEFAULT_PROJECT = "admin"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the user and the project the token is scoped to."""

    user_id: str
    username: str
    project_id: str
    system_role: str | None
    token_id: str


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_user(
    session: Session,
    username: str,
    password: str,
    project: Project,
    role: str = "member",
    system_role: str | None = None,
) -> User:
    if session.scalar(select(User).where(User.username == username)) is not None:
        raise Conflict(f"user {username!r} already exists")
    user = User(username=username, password_hash=hash_password(password), system_role=system_role)
    session.add(user)
    session.flush()
    session.add(Membership(user_id=user.id, project_id=project.id, role=role))
    return user


def ensure_project(session: Session, name: str) -> Project:
    project = session.scalar(select(Project).where(Project.name == name))
    if project is None:
        project = Project(name=name)
        session.add(project)
        session.flush()
    return project


def login(session: Session, username: str, password: str, ttl_seconds: int) -> tuple[str, datetime]:
    """Check the password; return a new token and its expiry. One message for every failure."""
    user = session.scalar(select(User).where(User.username == username))
    try:
        _hasher.verify(user.password_hash if user else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        raise Unauthorized("invalid username or password") from None
    if user is None or not user.enabled:
        raise Unauthorized("invalid username or password")
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    membership = session.scalar(select(Membership).where(Membership.user_id == user.id))
    token = secrets.token_urlsafe(32)
    expires_at = utcnow() + timedelta(seconds=ttl_seconds)
    session.add(
        Token(
            token_hash=_token_hash(token),
            user_id=user.id,
            project_id=membership.project_id if membership else None,
            expires_at=expires_at,
        )
    )
    return token, expires_at


def authenticate(session: Session, token: str) -> Principal:
    row = session.scalar(select(Token).where(Token.token_hash == _token_hash(token)))
    if row is None or row.revoked_at is not None or row.expires_at <= utcnow():
        raise Unauthorized("invalid or expired token")
    user = session.get(User, row.user_id)
    if user is None or not user.enabled or row.project_id is None:
        raise Unauthorized("invalid or expired token")
    return Principal(user.id, user.username, row.project_id, user.system_role, row.id)


def revoke(session: Session, token_id: str) -> None:
    session.execute(update(Token).where(Token.id == token_id).values(revoked_at=utcnow()))
