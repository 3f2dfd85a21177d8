"""Who is calling: password login with lockout, revocable bearer tokens scoped to a project.

(API keys and signed requests are in ``apikeys``; users and projects in ``identity``.)
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from nubis.db.models import Membership, Project, Token, User, utcnow
from nubis.db.session import Database
from nubis.services.core.errors import Unauthorized
from nubis.services.core.principal import Principal
from nubis.services.identity import passwords, policy, throttle

DEFAULT_PROJECT = "admin"
BAD_LOGIN = "invalid username or password (or the account is locked)"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def ensure_project(session: Session, name: str) -> Project:
    project = session.scalar(select(Project).where(Project.name == name))
    if project is None:
        project = Project(name=name)
        session.add(project)
        session.flush()
    return project


def project_role(session: Session, user_id: str, project_id: str) -> str | None:
    return session.scalar(
        select(Membership.role).where(
            Membership.user_id == user_id, Membership.project_id == project_id
        )
    )


def memberships(session: Session, user_id: str) -> list[tuple[Project, str]]:
    """The user's projects with its role in each, by project name."""
    rows = session.execute(
        select(Project, Membership.role)
        .join(Membership, Membership.project_id == Project.id)
        .where(Membership.user_id == user_id)
        .order_by(Project.name)
    ).all()
    return [(p, r) for p, r in rows]


def login_scope(session: Session, user: User, project: str | None) -> str:
    """The project a new token is scoped to: the one asked for (a member, or the system
    administrator), else the user's first project; a security administrator or auditor,
    who holds no project role, is scoped to the default project."""
    mine = [p for p, _role in memberships(session, user.id)]
    if project is not None:
        for row in mine:
            if project in (row.id, row.name):
                return row.id
        row = session.scalar(
            select(Project).where((Project.id == project) | (Project.name == project))
        )
        if row is not None and user.system_role == policy.SYSTEM_ADMIN:
            return row.id
        raise Unauthorized(f"user {user.username!r} has no role in project {project!r}")
    if mine:
        by_name = {row.name: row.id for row in mine}
        return by_name.get(DEFAULT_PROJECT, mine[0].id)
    if user.system_role is not None:
        return ensure_project(session, DEFAULT_PROJECT).id
    raise Unauthorized(f"user {user.username!r} has no role in any project")


def login(
    db: Database,
    username: str,
    password: str,
    ttl_seconds: int,
    project: str | None = None,
    address: str | None = None,
    limiter: throttle.AddressThrottle | None = None,
) -> tuple[str, datetime, Principal]:
    """Check the password; return a new token, its expiry and who it stands for.

    Every failure answers the same. A client address with too many recent failures
    is refused first (429), before any password is checked. The password is checked
    outside any transaction; a locked account's is not checked at all. Failures are
    counted atomically (committed even though the request fails); after the policy's
    limit the account is locked for a while."""
    limiter = limiter or throttle.AddressThrottle()
    limiter.check(db, address)
    with db.read() as s:
        user = s.scalar(select(User).where(User.username == username))
        usable = user is not None and user.enabled and not _locked(user, utcnow())
        stored = user.password_hash if user is not None else passwords.DUMMY_HASH
    good = False
    if usable or user is None:  # an unknown user takes as long as a known one
        good = passwords.verify(stored, password) and user is not None
    if not good:
        with db.begin() as s:
            limiter.count_failure(s, address)
            if usable and user is not None:
                count_failure(s, user.id)
        raise Unauthorized(BAD_LOGIN)
    assert user is not None
    rehashed = passwords.hash_password(password) if passwords.needs_rehash(stored) else None
    with db.begin() as s:
        found = s.get(User, user.id)
        if found is None or not found.enabled or found.password_hash != stored:
            raise Unauthorized(BAD_LOGIN)  # changed while the password was checked
        if _locked(found, utcnow()):
            raise Unauthorized(BAD_LOGIN)
        found.failed_logins = 0
        found.locked_until = None
        if rehashed is not None:
            found.password_hash = rehashed
        project_id = login_scope(s, found, project)
        token = secrets.token_urlsafe(32)
        row = Token(
            token_hash=token_hash(token),
            user_id=found.id,
            project_id=project_id,
            expires_at=utcnow() + timedelta(seconds=ttl_seconds),
        )
        s.add(row)
        s.flush()
        principal = Principal(
            found.id,
            found.username,
            project_id,
            project_role(s, found.id, project_id),
            found.system_role,
            token_id=row.id,
        )
        return token, row.expires_at, principal


def _locked(user: User, now: datetime) -> bool:
    return user.locked_until is not None and user.locked_until > now


def is_locked(user: User) -> bool:
    return _locked(user, utcnow())


def count_failure(session: Session, user_id: str) -> None:
    """One more failed password of the user (counted atomically in the database);
    at the policy's limit the account is locked for the lockout time."""
    rules = passwords.current_policy(session)
    failures = session.scalar(
        update(User)
        .where(User.id == user_id)
        .values(failed_logins=User.failed_logins + 1)
        .returning(User.failed_logins)
    )
    if failures is not None and failures >= rules.max_failed_logins:
        session.execute(
            update(User)
            .where(User.id == user_id)
            .values(
                failed_logins=0,
                locked_until=utcnow() + timedelta(seconds=rules.lockout_seconds),
            )
        )


def principal_for(
    session: Session,
    user_id: str,
    project_id: str,
    token_id: str | None = None,
    api_key_id: str | None = None,
) -> Principal:
    """The caller behind a valid token or key; a disabled or locked user is nobody."""
    user = session.get(User, user_id)
    if user is None or not user.enabled:
        raise Unauthorized("invalid or expired credentials")
    return Principal(
        user.id,
        user.username,
        project_id,
        project_role(session, user.id, project_id),
        user.system_role,
        token_id=token_id,
        api_key_id=api_key_id,
    )


def authenticate(session: Session, token: str) -> Principal:
    row = session.scalar(select(Token).where(Token.token_hash == token_hash(token)))
    if row is None or row.revoked_at is not None or row.expires_at <= utcnow():
        raise Unauthorized("invalid or expired token")
    if row.project_id is None:
        raise Unauthorized("invalid or expired token")
    return principal_for(session, row.user_id, row.project_id, token_id=row.id)


def revoke(session: Session, token_id: str) -> None:
    session.execute(update(Token).where(Token.id == token_id).values(revoked_at=utcnow()))
