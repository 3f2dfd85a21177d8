"""Users, projects, memberships and the password policy (security administrator)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from nubis.api.deps import PageDep, PlatformDep, PrincipalDep
from nubis.api.identity_schemas import (
    ApprovalOut,
    MemberIn,
    MemberOut,
    PasswordPolicyIO,
    PasswordPolicyPatch,
    ProjectIn,
    ProjectOut,
    SystemRoleIn,
    UserIn,
    UserOut,
    UserPatch,
)
from nubis.api.schemas import PageOut
from nubis.db.models import Approval, Project, User
from nubis.services.core.errors import BadRequest, Conflict, Forbidden, NotFoundError
from nubis.services.core.lookup import paginate
from nubis.services.identity import approvals, directory, passwords, policy
from nubis.services.network import security_groups

router = APIRouter(tags=["identity"])
USER_ACTIONS = ("enable", "disable", "unlock")


def user_out(session: Session, user: User) -> UserOut:
    out = UserOut.model_validate(user)
    out.projects = dict(directory.projects_of(session, user))
    return out


def approval_out(session: Session, approval: Approval) -> ApprovalOut:
    out = ApprovalOut.model_validate(approval)
    user = session.get(User, approval.user_id)
    out.username = user.username if user is not None else ""
    return out


def accepted(approval: ApprovalOut) -> JSONResponse:
    """202: the change waits for a second security administrator."""
    return JSONResponse(status_code=202, content=approval.model_dump(mode="json"))


PENDING = {202: {"model": ApprovalOut, "description": "waits for a second approval"}}


@router.get("/users")
def list_users(platform: PlatformDep, _p: PrincipalDep, pages: PageDep) -> PageOut[UserOut]:
    with platform.db.read() as s:
        page = paginate(s, select(User), User, pages)
        return PageOut.with_items(page, [user_out(s, u) for u in page.items])


@router.post("/users", status_code=201)
def create_user(body: UserIn, platform: PlatformDep, principal: PrincipalDep) -> UserOut:
    """A new user (the password policy applies); give it roles in projects next. A
    system role asked for here waits for a second security administrator's approval
    (``pending_approval``)."""
    with platform.db.read() as s:
        directory.check_new_user(s, body.username, body.system_role)
    new = passwords.prepare(platform.db, body.username, body.password)
    with platform.db.begin() as s:
        user = directory.create_user(s, body.username, new)
        out = user_out(s, user)
        if body.system_role is not None:
            approval = approvals.request_system_role(s, principal, user, body.system_role)
            out.pending_approval = approval_out(s, approval)
        return out


@router.get("/users/{ref}")
def get_user(ref: str, platform: PlatformDep, _p: PrincipalDep) -> UserOut:
    with platform.db.read() as s:
        return user_out(s, directory.get_user(s, ref))


@router.patch("/users/{ref}", responses=PENDING)
def update_user(
    ref: str, body: UserPatch, platform: PlatformDep, principal: PrincipalDep
) -> UserOut:
    """Reset a user's password (the policy applies; the user's tokens and API keys
    end). The password of a user who holds a system role is reset only once a
    second security administrator approves (202 and the request)."""
    with platform.db.read() as s:
        user = directory.get_user(s, ref)
        if body.password is None:
            return user_out(s, user)
    if user.id == principal.user_id:
        raise Conflict("change your own password with PUT /auth/password")
    new = passwords.prepare(platform.db, user.username, body.password, user.id)
    with platform.db.begin() as s:
        found = directory.get_user(s, user.id)
        if approvals.needs_approval(found):
            return accepted(  # type: ignore[return-value]
                approval_out(s, approvals.request_password_reset(s, principal, found, new))
            )
        passwords.change(s, found, new)
        return user_out(s, found)


@router.put("/users/{ref}/system-role", responses=PENDING)
def set_system_role(
    ref: str, body: SystemRoleIn, platform: PlatformDep, principal: PrincipalDep
) -> UserOut:
    """Take a user's system role away at once; give one only with a second security
    administrator's approval (202 and the request). Nobody changes their own."""
    with platform.db.begin() as s:
        user = directory.get_user(s, ref)
        if user.id == principal.user_id:
            raise Forbidden("nobody changes their own system role")
        if body.system_role is None:
            directory.set_system_role(s, user, None)
            return user_out(s, user)
        approval = approvals.request_system_role(s, principal, user, body.system_role)
        return accepted(approval_out(s, approval))  # type: ignore[return-value]


@router.get("/approvals")
def list_approvals(platform: PlatformDep, _p: PrincipalDep) -> list[ApprovalOut]:
    """The requests waiting for a second security administrator."""
    with platform.db.read() as s:
        return [approval_out(s, a) for a in approvals.pending(s)]


@router.post("/approvals/{approval_id}/actions/{action}")
def decide_approval(
    approval_id: str, action: str, platform: PlatformDep, principal: PrincipalDep
) -> ApprovalOut:
    """``approve`` (applies the change; not by the one who asked for it) or ``reject``."""
    if action not in ("approve", "reject"):
        raise NotFoundError(f"unknown approval action {action!r}; known: approve, reject")
    decide = approvals.approve if action == "approve" else approvals.reject
    with platform.db.begin() as s:
        return approval_out(s, decide(s, approval_id, principal))


@router.post("/users/{ref}/actions/{action}")
def user_action(ref: str, action: str, platform: PlatformDep, principal: PrincipalDep) -> UserOut:
    """``enable``, ``disable`` (its tokens and keys stop working at once) or ``unlock``
    (after too many failed logins)."""
    if action not in USER_ACTIONS:
        raise NotFoundError(f"unknown user action {action!r}; known: {', '.join(USER_ACTIONS)}")
    with platform.db.begin() as s:
        user = directory.get_user(s, ref)
        if action == "disable":
            directory.disable_user(s, user, principal.user_id)
        elif action == "enable":
            directory.set_enabled(s, user, True)
        else:
            directory.unlock(user)
        return user_out(s, user)


@router.delete("/users/{ref}", status_code=204)
def delete_user(ref: str, platform: PlatformDep, principal: PrincipalDep) -> Response:
    with platform.db.begin() as s:
        directory.delete_user(s, directory.get_user(s, ref), principal.user_id)
    return Response(status_code=204)


@router.get("/projects")
def list_projects(platform: PlatformDep, _p: PrincipalDep, pages: PageDep) -> PageOut[ProjectOut]:
    with platform.db.read() as s:
        page = paginate(s, select(Project), Project, pages)
        return PageOut.of(page, ProjectOut)


@router.post("/projects", status_code=201)
def create_project(body: ProjectIn, platform: PlatformDep, _p: PrincipalDep) -> ProjectOut:
    with platform.db.begin() as s:
        return ProjectOut.model_validate(directory.create_project(s, body.name, body.description))


@router.get("/projects/{ref}")
def get_project(ref: str, platform: PlatformDep, _p: PrincipalDep) -> ProjectOut:
    with platform.db.read() as s:
        return ProjectOut.model_validate(directory.get_project(s, ref))


@router.delete("/projects/{ref}", status_code=204)
def delete_project(ref: str, platform: PlatformDep, _p: PrincipalDep) -> Response:
    """Delete an empty project (instances, volumes and networks must be gone)."""
    with platform.db.begin() as s:
        project = directory.get_project(s, ref)
        directory.check_empty(s, project)
        filters = security_groups.release_project(s, project)
        directory.delete_project(s, project)
    platform.security_groups.remove_filters(filters)
    return Response(status_code=204)


@router.get("/projects/{ref}/members")
def list_members(ref: str, platform: PlatformDep, principal: PrincipalDep) -> list[MemberOut]:
    """Who holds which role in the project (a project admin: its own project only)."""
    with platform.db.read() as s:
        project = directory.get_project(s, ref)
        system = principal.roles & {policy.SECURITY_ADMIN, policy.SYSTEM_ADMIN}
        if not system and project.id != principal.project_id:
            raise NotFoundError(f"project {ref!r} not found")
        return [
            MemberOut(user_id=u.id, username=u.username, role=r)
            for u, r in directory.members(s, project)
        ]


@router.put("/projects/{ref}/members/{user}")
def grant_role(
    ref: str, user: str, body: MemberIn, platform: PlatformDep, _p: PrincipalDep
) -> MemberOut:
    """Give a user a role (admin, member, reader) in the project, replacing its old one."""
    with platform.db.begin() as s:
        target = directory.get_user(s, user)
        membership = directory.grant(s, target, directory.get_project(s, ref), body.role)
        return MemberOut(user_id=target.id, username=target.username, role=membership.role)


@router.delete("/projects/{ref}/members/{user}", status_code=204)
def revoke_role(ref: str, user: str, platform: PlatformDep, _p: PrincipalDep) -> Response:
    with platform.db.begin() as s:
        directory.revoke_membership(s, directory.get_user(s, user), directory.get_project(s, ref))
    return Response(status_code=204)


@router.get("/password-policy")
def get_password_policy(platform: PlatformDep, _p: PrincipalDep) -> PasswordPolicyIO:
    with platform.db.read() as s:
        return PasswordPolicyIO.model_validate(passwords.current_policy(s))


@router.put("/password-policy")
def set_password_policy(
    body: PasswordPolicyPatch, platform: PlatformDep, _p: PrincipalDep
) -> PasswordPolicyIO:
    changes = body.model_dump(exclude_none=True)
    if not changes:
        raise BadRequest("give at least one of " + ", ".join(passwords.POLICY_LIMITS))
    with platform.db.begin() as s:
        return PasswordPolicyIO.model_validate(passwords.set_policy(s, changes))
