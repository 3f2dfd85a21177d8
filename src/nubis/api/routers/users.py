"""Users, projects, memberships and the password policy (security administrator)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from nubis.api.deps import PageDep, PlatformDep, PrincipalDep
from nubis.api.identity_schemas import (
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
from nubis.db.models import Project, User
from nubis.services import identity, passwords, policy
from nubis.services.errors import BadRequest, NotFoundError
from nubis.services.lookup import paginate

router = APIRouter(tags=["identity"])
USER_ACTIONS = ("enable", "disable", "unlock")


def user_out(session: Session, user: User) -> UserOut:
    out = UserOut.model_validate(user)
    out.projects = dict(identity.projects_of(session, user))
    return out


@router.get("/users")
def list_users(platform: PlatformDep, _p: PrincipalDep, pages: PageDep) -> PageOut[UserOut]:
    with platform.db.begin() as s:
        page = paginate(s, select(User), User, pages)
        return PageOut.with_items(page, [user_out(s, u) for u in page.items])


@router.post("/users", status_code=201)
def create_user(body: UserIn, platform: PlatformDep, _p: PrincipalDep) -> UserOut:
    """A new user (the password policy applies); give it roles in projects next."""
    with platform.db.begin() as s:
        user = identity.create_user(s, body.username, body.password, body.system_role)
        return user_out(s, user)


@router.get("/users/{ref}")
def get_user(ref: str, platform: PlatformDep, _p: PrincipalDep) -> UserOut:
    with platform.db.begin() as s:
        return user_out(s, identity.get_user(s, ref))


@router.patch("/users/{ref}")
def update_user(ref: str, body: UserPatch, platform: PlatformDep, _p: PrincipalDep) -> UserOut:
    """Reset a user's password (the policy applies; the user's tokens end)."""
    with platform.db.begin() as s:
        user = identity.get_user(s, ref)
        if body.password is not None:
            passwords.change(s, user, body.password)
        return user_out(s, user)


@router.put("/users/{ref}/system-role")
def set_system_role(
    ref: str, body: SystemRoleIn, platform: PlatformDep, _p: PrincipalDep
) -> UserOut:
    with platform.db.begin() as s:
        user = identity.get_user(s, ref)
        identity.set_system_role(s, user, body.system_role)
        return user_out(s, user)


@router.post("/users/{ref}/actions/{action}")
def user_action(ref: str, action: str, platform: PlatformDep, principal: PrincipalDep) -> UserOut:
    """``enable``, ``disable`` (its tokens and keys stop working at once) or ``unlock``
    (after too many failed logins)."""
    if action not in USER_ACTIONS:
        raise NotFoundError(f"unknown user action {action!r}; known: {', '.join(USER_ACTIONS)}")
    with platform.db.begin() as s:
        user = identity.get_user(s, ref)
        if action == "disable":
            identity.disable_user(s, user, principal.user_id)
        elif action == "enable":
            identity.set_enabled(s, user, True)
        else:
            identity.unlock(user)
        return user_out(s, user)


@router.delete("/users/{ref}", status_code=204)
def delete_user(ref: str, platform: PlatformDep, principal: PrincipalDep) -> Response:
    with platform.db.begin() as s:
        identity.delete_user(s, identity.get_user(s, ref), principal.user_id)
    return Response(status_code=204)


@router.get("/projects")
def list_projects(platform: PlatformDep, _p: PrincipalDep, pages: PageDep) -> PageOut[ProjectOut]:
    with platform.db.begin() as s:
        page = paginate(s, select(Project), Project, pages)
        return PageOut.of(page, ProjectOut)


@router.post("/projects", status_code=201)
def create_project(body: ProjectIn, platform: PlatformDep, _p: PrincipalDep) -> ProjectOut:
    with platform.db.begin() as s:
        return ProjectOut.model_validate(identity.create_project(s, body.name, body.description))


@router.get("/projects/{ref}")
def get_project(ref: str, platform: PlatformDep, _p: PrincipalDep) -> ProjectOut:
    with platform.db.begin() as s:
        return ProjectOut.model_validate(identity.get_project(s, ref))


@router.delete("/projects/{ref}", status_code=204)
def delete_project(ref: str, platform: PlatformDep, _p: PrincipalDep) -> Response:
    """Delete an empty project (instances, volumes and networks must be gone)."""
    with platform.db.begin() as s:
        identity.delete_project(s, identity.get_project(s, ref))
    return Response(status_code=204)


@router.get("/projects/{ref}/members")
def list_members(ref: str, platform: PlatformDep, principal: PrincipalDep) -> list[MemberOut]:
    """Who holds which role in the project (a project admin: its own project only)."""
    with platform.db.begin() as s:
        project = identity.get_project(s, ref)
        system = principal.roles & {policy.SECURITY_ADMIN, policy.SYSTEM_ADMIN}
        if not system and project.id != principal.project_id:
            raise NotFoundError(f"project {ref!r} not found")
        return [
            MemberOut(user_id=u.id, username=u.username, role=r)
            for u, r in identity.members(s, project)
        ]


@router.put("/projects/{ref}/members/{user}")
def grant_role(
    ref: str, user: str, body: MemberIn, platform: PlatformDep, _p: PrincipalDep
) -> MemberOut:
    """Give a user a role (admin, member, reader) in the project, replacing its old one."""
    with platform.db.begin() as s:
        target = identity.get_user(s, user)
        membership = identity.grant(s, target, identity.get_project(s, ref), body.role)
        return MemberOut(user_id=target.id, username=target.username, role=membership.role)


@router.delete("/projects/{ref}/members/{user}", status_code=204)
def revoke_role(ref: str, user: str, platform: PlatformDep, _p: PrincipalDep) -> Response:
    with platform.db.begin() as s:
        identity.revoke_membership(s, identity.get_user(s, user), identity.get_project(s, ref))
    return Response(status_code=204)


@router.get("/password-policy")
def get_password_policy(platform: PlatformDep, _p: PrincipalDep) -> PasswordPolicyIO:
    with platform.db.begin() as s:
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
