"""Two people for what hands out a system role's powers.

A security administrator manages users and roles, but must not be able to make
themselves (or an account they control) a system administrator, nor take over a
privileged account by resetting its password. So these changes are requested by
one security administrator and applied only when a *second* one approves them:

- ``system-role``: a system role given to a user (system administrator, security
  administrator or auditor; taking a role away needs no approval);
- ``password-reset``: a new password set for a user who holds a system role.

Nobody changes their own system role, and the requester cannot approve their own
request. Where there is only one security administrator, the server's own
``nubis server approve`` (run as root on the server, which holds every secret
anyway) is the second person. A request not decided within ``TTL`` lapses.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from nubis.db.models import Approval, User, utcnow
from nubis.services.core.errors import BadRequest, Conflict, Forbidden, NotFoundError
from nubis.services.core.principal import Principal
from nubis.services.identity import directory, passwords, policy

TTL = timedelta(hours=24)
SYSTEM_ROLE = "system-role"
PASSWORD_RESET = "password-reset"
SERVER = "(server)"  # who decided, when ``nubis server approve`` did


def _new(session: Session, caller: Principal, user: User, kind: str, **values: object) -> Approval:
    now = utcnow()
    row = Approval(
        kind=kind,
        user_id=user.id,
        requested_by=caller.user_id,
        requested_by_name=caller.username,
        created_at=now,
        expires_at=now + TTL,
        **values,
    )
    session.add(row)
    session.flush()
    return row


def request_system_role(session: Session, caller: Principal, user: User, role: str) -> Approval:
    """Ask for ``role`` to be given to ``user`` (checked now, applied on approval)."""
    if user.id == caller.user_id:
        raise Forbidden("nobody changes their own system role")
    directory.check_system_role_change(session, user, role)
    if user.system_role == role:
        raise Conflict(f"user {user.username!r} is a {role} already")
    return _new(session, caller, user, SYSTEM_ROLE, system_role=role)


def request_password_reset(
    session: Session, caller: Principal, user: User, new: passwords.NewPassword
) -> Approval:
    """Ask for a new password of ``user``, who holds a system role."""
    return _new(
        session,
        caller,
        user,
        PASSWORD_RESET,
        password_hash=new.password_hash,
        replaces_hash=new.replaces,
    )


def needs_approval(user: User) -> bool:
    """Whether resetting the user's password needs a second security administrator."""
    return user.system_role in policy.SYSTEM_ROLES


def pending(session: Session) -> list[Approval]:
    return list(
        session.scalars(
            select(Approval)
            .where(Approval.status == "pending", Approval.expires_at > utcnow())
            .order_by(Approval.created_at)
        )
    )


def _pending(session: Session, approval_id: str) -> Approval:
    row = session.get(Approval, approval_id, with_for_update=True)
    if row is None:
        raise NotFoundError(f"approval {approval_id!r} not found")
    if row.status != "pending":
        raise Conflict(f"approval {approval_id!r} is {row.status} already")
    if row.expires_at <= utcnow():
        raise Conflict(f"approval {approval_id!r} lapsed: ask again")
    return row


def approve(session: Session, approval_id: str, decider: Principal | None) -> Approval:
    """Apply a pending request; ``decider`` None: the server itself. The requester
    cannot approve their own request, nor can the user it is about."""
    row = _pending(session, approval_id)
    if decider is not None:
        if decider.user_id == row.requested_by:
            raise Forbidden("a second security administrator must approve this request")
        if decider.user_id == row.user_id:
            raise Forbidden("nobody approves a change of their own account")
    user = session.get(User, row.user_id)
    if user is None:
        raise NotFoundError("the user of this request was deleted")
    if row.kind == SYSTEM_ROLE:
        directory.set_system_role(session, user, row.system_role)
    elif row.kind == PASSWORD_RESET:
        if row.password_hash is None:
            raise BadRequest("the request carries no password")
        passwords.change(session, user, passwords.NewPassword(row.password_hash, row.replaces_hash))
    row.password_hash = None  # no longer needed: do not keep it
    _decide(row, "approved", decider)
    return row


def reject(session: Session, approval_id: str, decider: Principal | None) -> Approval:
    """Drop a pending request (the requester may withdraw their own)."""
    row = _pending(session, approval_id)
    row.password_hash = None
    _decide(row, "rejected", decider)
    return row


def _decide(row: Approval, status: str, decider: Principal | None) -> None:
    row.status = status
    row.decided_by_name = decider.username if decider is not None else SERVER
    row.decided_at = utcnow()
