"""The caller of every service call (``Principal``) and the roles it may hold.

A caller holds at most one project role (in the project its token or API key is
scoped to) and at most one system role; what each role may do is in
``identity.policy``."""

from __future__ import annotations

from dataclasses import dataclass

ADMIN = "admin"
MEMBER = "member"
READER = "reader"
PROJECT_ROLES = (ADMIN, MEMBER, READER)

SYSTEM_ADMIN = "system_admin"
SECURITY_ADMIN = "security_admin"
AUDITOR = "auditor"
SYSTEM_ROLES = (SYSTEM_ADMIN, SECURITY_ADMIN, AUDITOR)
# system roles whose holders keep no project role (separation of duties)
EXCLUSIVE_SYSTEM_ROLES = (SECURITY_ADMIN, AUDITOR)

ALL_ROLES = PROJECT_ROLES + SYSTEM_ROLES


def effective_roles(project_role: str | None, system_role: str | None) -> frozenset[str]:
    if system_role in EXCLUSIVE_SYSTEM_ROLES:
        return frozenset({system_role})
    return frozenset(r for r in (project_role, system_role) if r is not None)


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
        return effective_roles(self.project_role, self.system_role)

    @property
    def all_projects(self) -> bool:
        """The system administrator sees and acts on the resources of every project."""
        return SYSTEM_ADMIN in self.roles

    def scope(self) -> dict[str, str]:
        """Filter for the rows the caller may see (``filter_by(**principal.scope())``)."""
        return {} if self.all_projects else {"project_id": self.project_id}

    def owns(self, project_id: str | None) -> bool:
        return self.all_projects or project_id == self.project_id
