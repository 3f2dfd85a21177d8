"""Users, projects and memberships (the security administrator's side of identity)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session

from nubis.db.models import (
    ApiKey,
    Image,
    Instance,
    KeyPair,
    Membership,
    Network,
    Port,
    Project,
    RuleGroup,
    Snapshot,
    User,
    Volume,
    VolumeSnapshot,
    utcnow,
)
from nubis.services.core.errors import BadRequest, Conflict, NotFoundError
from nubis.services.core.lookup import get_by_id_or_name, validate_name
from nubis.services.identity import auth, passwords, policy


def get_user(session: Session, ref: str) -> User:
    user = session.scalar(select(User).where((User.id == ref) | (User.username == ref)))
    if user is None:
        raise NotFoundError(f"user {ref!r} not found")
    return user


def get_project(session: Session, ref: str) -> Project:
    return get_by_id_or_name(session, Project, ref, "project")


def _check_system_role(role: str | None) -> None:
    if role is not None and role not in policy.SYSTEM_ROLES:
        raise BadRequest(f"system role must be one of {', '.join(policy.SYSTEM_ROLES)} or none")


def _check_project_role(role: str) -> None:
    if role not in policy.PROJECT_ROLES:
        raise BadRequest(f"project role must be one of {', '.join(policy.PROJECT_ROLES)}")


def _memberships(session: Session, user_id: str) -> int:
    return session.scalar(select(func.count()).where(Membership.user_id == user_id)) or 0


def check_new_user(session: Session, username: str, system_role: str | None = None) -> None:
    """Refuse a bad or taken user name, or an unknown system role."""
    validate_name(username, "user")
    _check_system_role(system_role)
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise Conflict(f"user {username!r} already exists")


def create_user(
    session: Session,
    username: str,
    password: passwords.NewPassword,
    system_role: str | None = None,
) -> User:
    """A new user with a password ``passwords.prepare`` checked and hashed."""
    check_new_user(session, username, system_role)
    user = User(
        username=username,
        password_hash=password.password_hash,
        system_role=system_role,
    )
    session.add(user)
    session.flush()
    return user


def set_enabled(session: Session, user: User, enabled: bool) -> None:
    """Disable (every token and key stops working at once) or enable again."""
    user.enabled = enabled
    if not enabled:
        passwords.revoke_all_tokens(session, user.id)


def unlock(user: User) -> None:
    user.locked_until = None
    user.failed_logins = 0


def check_system_role_change(session: Session, user: User, role: str | None) -> None:
    """Refuse a system role ``user`` may not take (or lose) as things are."""
    _check_system_role(role)
    if role in policy.EXCLUSIVE_SYSTEM_ROLES and _memberships(session, user.id):
        raise Conflict(
            f"a {role} holds no project role (separation of duties): "
            f"remove {user.username!r} from its projects first"
        )
    if user.system_role == policy.SECURITY_ADMIN and role != policy.SECURITY_ADMIN:
        _keep_one_security_admin(session, user)


def set_system_role(session: Session, user: User, role: str | None) -> None:
    """Give or take the system role (callers giving one go through ``approvals``)."""
    check_system_role_change(session, user, role)
    user.system_role = role


def _keep_one_security_admin(session: Session, leaving: User) -> None:
    others = session.scalar(
        select(func.count()).where(
            User.system_role == policy.SECURITY_ADMIN, User.enabled, User.id != leaving.id
        )
    )
    if not others:
        raise Conflict("the last enabled security administrator cannot be removed or disabled")


def _check_removable(session: Session, user: User, caller_id: str, verb: str) -> None:
    """Nobody removes their own account, nor the last enabled security administrator."""
    if user.id == caller_id:
        raise Conflict(f"you cannot {verb} your own account")
    if user.system_role == policy.SECURITY_ADMIN:
        _keep_one_security_admin(session, user)


def delete_user(session: Session, user: User, caller_id: str) -> None:
    _check_removable(session, user, caller_id, "delete")
    session.delete(user)


def disable_user(session: Session, user: User, caller_id: str) -> None:
    _check_removable(session, user, caller_id, "disable")
    set_enabled(session, user, False)


def create_project(session: Session, name: str, description: str = "") -> Project:
    validate_name(name, "project")
    if len(description) > 255:
        raise BadRequest("description must be at most 255 characters")
    if session.scalar(select(Project).where(Project.name == name)) is not None:
        raise Conflict(f"project {name!r} already exists")
    project = Project(name=name, description=description)
    session.add(project)
    session.flush()
    return project


OWNED: tuple[tuple[Any, str], ...] = (
    (Instance, "instances"),
    (Volume, "volumes"),
    (VolumeSnapshot, "volume snapshots"),
    (Snapshot, "snapshots"),
    (Network, "networks"),
    (Port, "ports"),
    (Image, "images"),
    (KeyPair, "key pairs"),
    (RuleGroup, "rule groups"),
)


def check_empty(session: Session, project: Project) -> None:
    """Only an empty project goes: its resources are never deleted behind a user's back."""
    for model, what in OWNED:
        if session.scalar(select(exists().where(model.project_id == project.id))):
            raise Conflict(f"project {project.name!r} still has {what}; delete them first")


def delete_project(session: Session, project: Project) -> None:
    """Delete a project found empty by ``check_empty`` once the capabilities released
    what they made for it themselves (``security_groups.release_project``)."""
    session.delete(project)


def grant(session: Session, user: User, project: Project, role: str) -> Membership:
    """Give ``user`` the ``role`` in ``project`` (replacing the role held there)."""
    _check_project_role(role)
    if user.system_role in policy.EXCLUSIVE_SYSTEM_ROLES:
        raise Conflict(
            f"user {user.username!r} is a {user.system_role} and holds no project role "
            "(separation of duties)"
        )
    membership = session.get(Membership, (user.id, project.id))
    if membership is None:
        membership = Membership(user_id=user.id, project_id=project.id, role=role)
        session.add(membership)
    else:
        membership.role = role
    session.flush()
    return membership


def revoke_membership(session: Session, user: User, project: Project) -> None:
    membership = session.get(Membership, (user.id, project.id))
    if membership is None:
        raise NotFoundError(f"user {user.username!r} has no role in project {project.name!r}")
    session.delete(membership)
    # keys scoped to the project stop working with the role
    for key in session.scalars(
        select(ApiKey).where(ApiKey.user_id == user.id, ApiKey.project_id == project.id)
    ):
        key.revoked_at = key.revoked_at or utcnow()


def members(session: Session, project: Project) -> list[tuple[User, str]]:
    rows = session.execute(
        select(User, Membership.role)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.project_id == project.id)
        .order_by(User.username)
    ).all()
    return [(u, r) for u, r in rows]


def projects_of(session: Session, user: User) -> list[tuple[str, str]]:
    return [(p.name, role) for p, role in auth.memberships(session, user.id)]
