"""Who is calling: password login with lockout, revocable bearer tokens scoped to a project.

(API keys and signed requests are in ``apikeys``; users and projects in ``identity``.)
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from nubis.db.models import Membership, Project, Token, User, utcnow
from nubis.db.session import Database
from nubis.services import passwords, policy
from nubis.services.errors import Unauthorized

DEFAULT_PROJECT = "admin"
BAD_LOGIN = "invalid username or password (or the account is locked)"


@dataclass(frozen=True)
class Principal:
    """The caller: the user, the project the token or key is scoped to, the roles held."""

    user_id: str
    username: str
    project_id: str
    project_role: str | None
    system_role: str | None
    token_id: str | None = None
    api_key_id: str | None = None

    @property
    def roles(self) -> frozenset[str]:
        return policy.effective_roles(self.project_role, self.system_role)

    @property
    def all_projects(self) -> bool:
        """The system administrator sees and acts on the resources of every project."""
        return policy.SYSTEM_ADMIN in self.roles

    def scope(self) -> dict[str, str]:
        """Filter for the rows the caller may see (``filter_by(**principal.scope())``)."""
        return {} if self.all_projects else {"project_id": self.project_id}

    def owns(self, project_id: str | None) -> bool:
        return self.all_projects or project_id == self.project_id


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
    db: Database, username: str, password: str, ttl_seconds: int, project: str | None = None
) -> tuple[str, datetime, Principal]:
    """Check the password; return a new token, its expiry and who it stands for.

    Every failure answers the same. Failures are counted (committed even though the
    request fails); after the policy's limit the account is locked for a while."""
    with db.begin() as s:
        user = s.scalar(select(User).where(User.username == username))
        good = passwords.verify(user.password_hash if user else passwords.DUMMY_HASH, password)
        now = utcnow()
        if user is not None and user.enabled and user.locked_until is not None:
            if user.locked_until > now:
                good = False
            else:
                user.locked_until = None
        if user is None or not user.enabled or not good:
            if user is not None and user.enabled and user.locked_until is None:
                _count_failure(s, user)
            failed = True
        else:
            failed = False
            user.failed_logins = 0
            if passwords.needs_rehash(user.password_hash):
                user.password_hash = passwords.hash_password(password)
    if failed:
        raise Unauthorized(BAD_LOGIN)
    with db.begin() as s:
        user = s.scalars(select(User).where(User.username == username)).one()
        project_id = login_scope(s, user, project)
        token = secrets.token_urlsafe(32)
        row = Token(
            token_hash=token_hash(token),
            user_id=user.id,
            project_id=project_id,
            expires_at=utcnow() + timedelta(seconds=ttl_seconds),
        )
        s.add(row)
        s.flush()
        principal = Principal(
            user.id,
            user.username,
            project_id,
            project_role(s, user.id, project_id),
            user.system_role,
            token_id=row.id,
        )
        return token, row.expires_at, principal


def _count_failure(session: Session, user: User) -> None:
    rules = passwords.current_policy(session)
    user.failed_logins += 1
    if user.failed_logins >= rules.max_failed_logins:
        user.locked_until = utcnow() + timedelta(seconds=rules.lockout_seconds)
        user.failed_logins = 0


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
