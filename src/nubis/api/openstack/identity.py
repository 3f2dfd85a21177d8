"""Keystone v3: version discovery, password login scoped to a project (by id, or by
name in domain ``Default``), token validation and revocation, the service catalog,
and projects and users for the administrators who may list them natively."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from nubis.api import audit_trail
from nubis.api.deps import PlatformDep, client_address
from nubis.api.openstack import links
from nubis.api.openstack.caller import As, token_principal
from nubis.db.models import Project, Token, User, utcnow
from nubis.services.core.errors import BadRequest, NotFoundError, Unauthorized
from nubis.services.core.principal import Principal
from nubis.services.identity import auth, directory

router = APIRouter(prefix="/identity", tags=["openstack identity"])

DOMAIN = {"id": "default", "name": "Default"}
API_VERSION = "v3.14"
SUBJECT_HEADER = "X-Subject-Token"


def _version(request: Request) -> dict[str, Any]:
    return {
        "id": API_VERSION,
        "status": "stable",
        "updated": "2020-04-07T00:00:00Z",
        "links": [{"rel": "self", "href": links.service_url(request, "identity") + "/"}],
        "media-types": [
            {"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}
        ],
    }


@router.get("")
@router.get("/")
def versions(request: Request) -> dict[str, Any]:
    return {"versions": {"values": [_version(request)]}}


@router.get("/v3")
@router.get("/v3/")
def version(request: Request) -> dict[str, Any]:
    return {"version": _version(request)}


class _Named(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str | None = None
    name: str | None = None


class _User(_Named):
    password: str = Field(max_length=4096)
    domain: _Named | None = None


class _Password(BaseModel):
    user: _User


class _Identity(BaseModel):
    methods: list[str]
    password: _Password | None = None


class _Project(_Named):
    domain: _Named | None = None


class _Scope(BaseModel):
    model_config = ConfigDict(extra="allow")
    project: _Project | None = None


class _Auth(BaseModel):
    identity: _Identity
    scope: _Scope | dict | str | None = None


class AuthIn(BaseModel):
    auth: _Auth


def _check_domain(domain: _Named | None) -> None:
    if domain is None:
        return
    if domain.id not in (None, "default") or domain.name not in (None, "Default"):
        raise Unauthorized("Nubis has one domain: Default (id default)")


def _username(platform: PlatformDep, user: _User) -> str:
    _check_domain(user.domain)
    if user.name:
        return user.name
    if not user.id:
        raise BadRequest("auth.identity.password.user needs a name or an id")
    with platform.db.begin() as s:
        row = s.get(User, user.id)
        if row is None:
            raise Unauthorized(auth.BAD_LOGIN)
        return row.username


def _scope(scope: _Scope | dict | str | None) -> str | None:
    if scope is None:
        return None
    if not isinstance(scope, _Scope) or scope.project is None:
        raise Unauthorized("Nubis tokens are scoped to a project: scope.project")
    project = scope.project
    _check_domain(project.domain)
    ref = project.id or project.name
    if not ref:
        raise BadRequest("scope.project needs an id, or a name and its domain")
    return ref


def roles_of(principal: Principal) -> list[dict[str, str]]:
    return [{"id": r, "name": r} for r in sorted(principal.roles)]


def catalog(request: Request, project_id: str) -> list[dict[str, Any]]:
    entries = []
    for service, (_path, name) in links.SERVICES.items():
        url = links.service_url(request, service, project_id)
        entries.append(
            {
                "id": service,
                "type": service,
                "name": name,
                "endpoints": [
                    {
                        "id": f"{service}-{interface}",
                        "interface": interface,
                        "region": links.REGION,
                        "region_id": links.REGION,
                        "url": url,
                    }
                    for interface in ("public", "internal", "admin")
                ],
            }
        )
    return entries


def token_body(
    request: Request,
    platform: PlatformDep,
    principal: Principal,
    issued_at: datetime,
    expires_at: datetime,
) -> dict[str, Any]:
    with platform.db.begin() as s:
        project = s.get(Project, principal.project_id)
        project_name = project.name if project else principal.project_id
    return {
        "token": {
            "methods": ["password"],
            "user": {
                "id": principal.user_id,
                "name": principal.username,
                "domain": DOMAIN,
                "password_expires_at": None,
            },
            "project": {"id": principal.project_id, "name": project_name, "domain": DOMAIN},
            "roles": roles_of(principal),
            "is_domain": False,
            "issued_at": links.timestamp(issued_at),
            "expires_at": links.timestamp(expires_at),
            "audit_ids": [principal.token_id],
            "catalog": catalog(request, principal.project_id),
        }
    }


@router.post("/v3/auth/tokens", status_code=201)
def issue_token(body: AuthIn, request: Request, response: Response, platform: PlatformDep) -> Any:
    """Log in with a password: a Nubis token, in ``X-Subject-Token``."""
    ident = body.auth.identity
    if "password" not in ident.methods or ident.password is None:
        raise Unauthorized("Nubis accepts the password method: auth.identity.password")
    username = _username(platform, ident.password.user)
    audit_trail.note_username(request.scope, username)
    project = _scope(body.auth.scope)
    issued = utcnow()
    token, expires_at, principal = auth.login(
        platform.db,
        username,
        ident.password.user.password,
        platform.settings.token_ttl_seconds,
        project,
        client_address(request),
        platform.login_throttle,
    )
    audit_trail.note_principal(request.scope, principal)
    response.headers[SUBJECT_HEADER] = token
    return token_body(request, platform, principal, issued, expires_at)


def _subject(platform: PlatformDep, request: Request) -> tuple[Principal, Token]:
    subject = request.headers.get(SUBJECT_HEADER)
    if not subject:
        raise BadRequest(f"the token to check goes in {SUBJECT_HEADER}")
    with platform.db.begin() as s:
        try:
            principal = auth.authenticate(s, subject)
        except Unauthorized as exc:
            raise NotFoundError("the token is unknown, expired or revoked") from exc
        row = s.get(Token, principal.token_id)
        assert row is not None
        s.expunge(row)
    return principal, row


CallerDep = Annotated[Principal, Depends(token_principal)]


@router.get("/v3/auth/tokens")
def validate_token(request: Request, platform: PlatformDep, caller: CallerDep) -> JSONResponse:
    """A token's details, for its owner (or a system administrator)."""
    principal, row = _subject(platform, request)
    if principal.user_id != caller.user_id and not caller.all_projects:
        raise NotFoundError("the token is unknown, expired or revoked")
    body = token_body(request, platform, principal, row.created_at, row.expires_at)
    return JSONResponse(body, headers={SUBJECT_HEADER: request.headers[SUBJECT_HEADER]})


@router.head("/v3/auth/tokens")
def check_token(request: Request, platform: PlatformDep, caller: CallerDep) -> Response:
    principal, _row = _subject(platform, request)
    if principal.user_id != caller.user_id and not caller.all_projects:
        raise NotFoundError("the token is unknown, expired or revoked")
    return Response(status_code=200)


@router.delete("/v3/auth/tokens", status_code=204)
def revoke_token(request: Request, platform: PlatformDep, caller: CallerDep) -> Response:
    """Log out: the subject token (one's own) stops working at once."""
    principal, row = _subject(platform, request)
    if principal.user_id != caller.user_id:
        raise NotFoundError("the token is unknown, expired or revoked")
    with platform.db.begin() as s:
        auth.revoke(s, row.id)
    return Response(status_code=204)


def project_view(request: Request, project: Project) -> dict[str, Any]:
    href = f"{links.service_url(request, 'identity')}/projects/{project.id}"
    return {
        "id": project.id,
        "name": project.name,
        "description": project.description,
        "domain_id": DOMAIN["id"],
        "enabled": True,
        "is_domain": False,
        "parent_id": DOMAIN["id"],
        "tags": [],
        "links": {"self": href},
    }


@router.get("/v3/auth/projects")
def my_projects(request: Request, platform: PlatformDep, caller: CallerDep) -> dict[str, Any]:
    """The projects the caller can scope a token to."""
    with platform.db.read() as s:
        mine = [p for p, _role in auth.memberships(s, caller.user_id)]
        return {"projects": [project_view(request, p) for p in mine], "links": {}}


@router.get("/v3/users/{user_id}/projects")
def user_projects(
    user_id: str, request: Request, platform: PlatformDep, caller: CallerDep
) -> dict[str, Any]:
    if user_id != caller.user_id:
        raise NotFoundError("users see their own projects here")
    return my_projects(request, platform, caller)


@router.get("/v3/projects")
def list_projects(
    request: Request,
    platform: PlatformDep,
    _caller: Annotated[Principal, As("GET /projects")],
    name: str | None = None,
) -> dict[str, Any]:
    query = select(Project).order_by(Project.name)
    if name:
        query = query.where(Project.name == name)
    with platform.db.read() as s:
        rows = s.scalars(query).all()
        return {"projects": [project_view(request, p) for p in rows], "links": {}}


@router.get("/v3/projects/{ref}")
def get_project(
    ref: str,
    request: Request,
    platform: PlatformDep,
    _caller: Annotated[Principal, As("GET /projects/{ref}")],
) -> dict[str, Any]:
    with platform.db.read() as s:
        return {"project": project_view(request, directory.get_project(s, ref))}


def user_view(request: Request, user: User) -> dict[str, Any]:
    href = f"{links.service_url(request, 'identity')}/users/{user.id}"
    return {
        "id": user.id,
        "name": user.username,
        "domain_id": DOMAIN["id"],
        "enabled": user.enabled,
        "password_expires_at": None,
        "options": {},
        "links": {"self": href},
    }


@router.get("/v3/users")
def list_users(
    request: Request,
    platform: PlatformDep,
    _caller: Annotated[Principal, As("GET /users")],
    name: str | None = None,
) -> dict[str, Any]:
    query = select(User).order_by(User.username)
    if name:
        query = query.where(User.username == name)
    with platform.db.read() as s:
        return {"users": [user_view(request, u) for u in s.scalars(query).all()], "links": {}}


@router.get("/v3/users/{ref}")
def get_user(
    ref: str,
    request: Request,
    platform: PlatformDep,
    _caller: Annotated[Principal, As("GET /users/{ref}")],
) -> dict[str, Any]:
    with platform.db.read() as s:
        return {"user": user_view(request, directory.get_user(s, ref))}
