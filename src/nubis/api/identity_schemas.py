"""Request and response bodies of identity: users, projects, roles, keys, quotas, audit."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from nubis.api.schemas import In, Out


class WhoAmIOut(BaseModel):
    user_id: str
    username: str
    project_id: str
    project_role: str | None
    system_role: str | None
    roles: list[str]
    api_key_id: str | None


class PasswordChangeIn(In):
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=1, max_length=1024)


class UserIn(In):
    username: str
    password: str = Field(min_length=1, max_length=1024)
    system_role: str | None = None


class UserPatch(In):
    password: str | None = Field(default=None, min_length=1, max_length=1024)


class SystemRoleIn(In):
    system_role: str | None


class ApprovalOut(Out):
    """A change waiting for a second security administrator (docs/identity.md)."""

    id: str
    kind: str  # system-role | password-reset
    user_id: str
    username: str = ""
    system_role: str | None
    requested_by_name: str
    status: str  # pending | approved | rejected
    decided_by_name: str | None
    created_at: datetime
    expires_at: datetime
    decided_at: datetime | None


class UserOut(Out):
    id: str
    username: str
    system_role: str | None
    enabled: bool
    locked_until: datetime | None
    failed_logins: int
    created_at: datetime
    projects: dict[str, str] = {}
    # the system role asked for at creation, waiting for a second security administrator
    pending_approval: ApprovalOut | None = None


class ProjectIn(In):
    name: str
    description: str = ""


class ProjectOut(Out):
    id: str
    name: str
    description: str
    created_at: datetime


class MemberIn(In):
    role: str


class MemberOut(BaseModel):
    user_id: str
    username: str
    role: str


class PasswordPolicyIO(Out):
    min_length: int
    history: int
    max_failed_logins: int
    lockout_seconds: int


class PasswordPolicyPatch(In):
    min_length: int | None = None
    history: int | None = None
    max_failed_logins: int | None = None
    lockout_seconds: int | None = None


class ApiKeyIn(In):
    name: str


class ApiKeyOut(Out):
    id: str
    name: str
    project_id: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyOut):
    secret: str  # shown once


class QuotaOut(BaseModel):
    project_id: str
    quotas: dict[str, dict[str, int]]


class AuditOut(Out):
    id: str
    created_at: datetime
    username: str | None
    user_id: str | None
    project_id: str | None
    roles: str
    api_key_id: str | None
    action: str
    method: str
    path: str
    resource_type: str | None
    resource_id: str | None
    params: Any
    source_ip: str | None
    success: bool
    status_code: int
