"""Who may do what: the one table of permissions, keyed by API route.

A caller holds at most one project role (in the project its token or API key is
scoped to) and at most one system role. The system roles split the duties as in
FusionCompute: the system administrator runs the infrastructure and may act on
the resources of every project, but cannot grant roles; the security
administrator manages users, projects, roles and lockouts, and touches neither
infrastructure nor VMs; the auditor reads and exports the audit log, nothing else.
A security administrator or auditor holds no project role, so a project
membership cannot give them back what separation of duties takes away.

Every route the API serves is in ``POLICY`` (a unit test checks it both ways); a
route missing from it is refused to everyone.
"""

from __future__ import annotations

from nubis.services.core.errors import Forbidden
from nubis.services.core.principal import (
    ADMIN,
    ALL_ROLES,
    AUDITOR,
    EXCLUSIVE_SYSTEM_ROLES,
    MEMBER,
    PROJECT_ROLES,
    READER,
    SECURITY_ADMIN,
    SYSTEM_ADMIN,
    SYSTEM_ROLES,
    effective_roles,
)

# the role names are defined with the caller (core.principal) and published here too:
# the policy is where the rest of the code looks them up
__all__ = [
    "ADMIN",
    "ALL_ROLES",
    "AUDITOR",
    "EXCLUSIVE_SYSTEM_ROLES",
    "MEMBER",
    "PROJECT_ROLES",
    "READER",
    "SECURITY_ADMIN",
    "SYSTEM_ADMIN",
    "SYSTEM_ROLES",
    "effective_roles",
    "POLICY",
    "action_key",
    "allowed",
    "authorize",
]

ANYONE = frozenset(ALL_ROLES)
READ = frozenset({ADMIN, MEMBER, READER, SYSTEM_ADMIN})  # a project's resources, the catalog
WRITE = frozenset({ADMIN, MEMBER, SYSTEM_ADMIN})  # change a project's resources
INFRA = frozenset({SYSTEM_ADMIN})  # hosts, zones, clusters, pools, flavors, offerings
IDENTITY = frozenset({SECURITY_ADMIN})  # users, projects, roles, lockouts
IDENTITY_READ = frozenset({SECURITY_ADMIN, SYSTEM_ADMIN})  # projects: quotas are set on them
AUDIT = frozenset({AUDITOR})


def _crud(path: str, read: frozenset[str], write: frozenset[str]) -> dict[str, frozenset[str]]:
    """List, create, show and delete of one collection."""
    return {
        f"GET {path}": read,
        f"POST {path}": write,
        f"GET {path}/{{ref}}": read,
        f"DELETE {path}/{{ref}}": write,
    }


POLICY: dict[str, frozenset[str]] = {
    # session
    "DELETE /auth/tokens/current": ANYONE,
    "GET /auth/whoami": ANYONE,
    "PUT /auth/password": ANYONE,
    # own API keys
    "GET /api-keys": ANYONE,
    "POST /api-keys": ANYONE,
    "DELETE /api-keys/{key_id}": ANYONE,
    # identity (security administrator)
    **_crud("/users", IDENTITY, IDENTITY),
    "PATCH /users/{ref}": IDENTITY,
    "POST /users/{ref}/actions/{action}": IDENTITY,
    "PUT /users/{ref}/system-role": IDENTITY,
    "GET /approvals": IDENTITY,
    "POST /approvals/{approval_id}/actions/{action}": IDENTITY,
    **_crud("/projects", IDENTITY_READ, IDENTITY),
    "GET /projects/{ref}/members": IDENTITY_READ | {ADMIN},
    "PUT /projects/{ref}/members/{user}": IDENTITY,
    "DELETE /projects/{ref}/members/{user}": IDENTITY,
    "GET /password-policy": IDENTITY,
    "PUT /password-policy": IDENTITY,
    # quotas: usage for the project, limits set by the system administrator
    "GET /quotas": READ,
    "GET /projects/{ref}/quotas": IDENTITY_READ,
    "PUT /projects/{ref}/quotas": INFRA,
    # audit log (auditor)
    "GET /audit": AUDIT,
    "GET /audit/export": AUDIT,
    # infrastructure
    **_crud("/zones", READ, INFRA),
    "GET /zones/{ref}/capacity": INFRA,
    **_crud("/clusters", READ, INFRA),
    "PATCH /clusters/{ref}": INFRA,
    "GET /clusters/{ref}/capacity": INFRA,
    **_crud("/hosts", INFRA, INFRA),
    "GET /controllers": INFRA,
    "GET /hosts/{ref}/capacity": INFRA,
    "POST /hosts/{ref}/actions/maintenance": INFRA,
    "POST /hosts/{ref}/actions/exit-maintenance": INFRA,
    "POST /hosts/{ref}/actions/evacuate": INFRA,
    "POST /hosts/{ref}/actions/{action}": INFRA,
    "PUT /hosts/{ref}/fencing": INFRA,
    "PUT /hosts/{ref}/agent": INFRA,
    **_crud("/storage-pools", INFRA, INFRA),
    "POST /storage-pools/{ref}/actions/refresh": INFRA,
    "GET /storage-pools/{ref}/luns": INFRA,
    **_crud("/disk-offerings", READ, INFRA),
    **_crud("/flavors", READ, INFRA),
    # images: projects upload their own; only the system administrator makes public ones
    **_crud("/images", READ, WRITE),
    "GET /images/{ref}/file": READ,
    # instances
    **_crud("/instances", READ, WRITE),
    "GET /instances/{ref}/ports": READ,
    "POST /instances/{ref}/ports": WRITE,
    "DELETE /instances/{ref}/ports/{port_id}": WRITE,
    "POST /instances/{ref}/actions/migrate": INFRA,
    "PUT /instances/{ref}/properties": WRITE,
    "POST /instances/{ref}/actions/cancel-migration": INFRA,
    "POST /instances/{ref}/actions/create-template": WRITE,
    "POST /instances/{ref}/actions/clone": WRITE,
    "POST /instances/{ref}/actions/resize": WRITE,
    "POST /instances/{ref}/actions/confirm-resize": WRITE,
    "POST /instances/{ref}/actions/revert-resize": WRITE,
    "PUT /instances/{ref}/cdrom": WRITE,
    "DELETE /instances/{ref}/cdrom": WRITE,
    "PUT /instances/{ref}/boot-order": WRITE,
    "PUT /instances/{ref}/ha": WRITE,
    "POST /instances/{ref}/actions/{action}": WRITE,
    "GET /instances/{ref}/console-log": READ,
    # a console is control of the machine: not for readers. The console websocket
    # itself is authorised by the one-time ticket this returns (services/console.py).
    "POST /instances/{ref}/console": WRITE,
    "GET /instances/{ref}/volumes": READ,
    "POST /instances/{ref}/volumes": WRITE,
    "DELETE /instances/{ref}/volumes/{volume}": WRITE,
    "GET /instances/{ref}/snapshots": READ,
    "POST /instances/{ref}/snapshots": WRITE,
    "GET /instances/{ref}/snapshots/{snap}": READ,
    "DELETE /instances/{ref}/snapshots/{snap}": WRITE,
    "POST /instances/{ref}/snapshots/{snap}/actions/revert": WRITE,
    # networking
    **_crud("/networks", READ, WRITE),
    "GET /networks/{ref}/ports": READ,
    "POST /networks/{ref}/subnets": WRITE,
    "DELETE /networks/{ref}/subnets/{subnet_id}": WRITE,
    **_crud("/key-pairs", READ, WRITE),
    "GET /ports/{port_id}": READ,
    "PUT /ports/{port_id}/security-groups": WRITE,
    "PUT /ports/{port_id}/bandwidth": WRITE,
    **_crud("/rule-groups", READ, WRITE),
    **_crud("/routers", READ, WRITE),
    "PUT /routers/{ref}/gateway": WRITE,
    "DELETE /routers/{ref}/gateway": WRITE,
    "POST /routers/{ref}/interfaces": WRITE,
    "DELETE /routers/{ref}/interfaces/{network}": WRITE,
    **_crud("/floating-ips", READ, WRITE),
    "PUT /floating-ips/{ref}/port": WRITE,
    "GET /floating-ips/{ref}/port-forwardings": READ,
    "POST /floating-ips/{ref}/port-forwardings": WRITE,
    "DELETE /floating-ips/{ref}/port-forwardings/{forward_id}": WRITE,
    **_crud("/security-groups", READ, WRITE),
    "POST /security-groups/{ref}/rules": WRITE,
    "DELETE /security-groups/{ref}/rules/{rule_id}": WRITE,
    # volumes
    **_crud("/volumes", READ, WRITE),
    "POST /volumes/upload": WRITE,
    "GET /volumes/{ref}/download": READ,
    "POST /volumes/{ref}/actions/extend": WRITE,
    "POST /volumes/{ref}/actions/migrate": INFRA,
    "POST /volumes/{ref}/actions/create-template": WRITE,
    "GET /volumes/{ref}/snapshots": READ,
    "POST /volumes/{ref}/snapshots": WRITE,
    "GET /volumes/{ref}/snapshots/{snap}": READ,
    "DELETE /volumes/{ref}/snapshots/{snap}": WRITE,
    "POST /volumes/{ref}/snapshots/{snap}/actions/revert": WRITE,
    # monitoring
    "GET /instances/{ref}/metrics": READ,
    "GET /hosts/{ref}/metrics": INFRA,
    "GET /events": READ,
    **_crud("/alarms", READ, WRITE),
    "POST /alarms/{ref}/actions/{action}": WRITE,
    "GET /alarms/{ref}/notifications": READ,
    "GET /webhook-allowlist": INFRA,
    "PUT /webhook-allowlist": INFRA,
    # metering: prices set by the system administrator, reports per project
    "GET /rates": READ,
    "PUT /rates": INFRA,
    "DELETE /rates/{rate_id}": INFRA,
    "GET /usage/report": READ,
    # tasks
    "GET /tasks": READ,
    "GET /tasks/{task_id}": READ,
    "POST /tasks/{task_id}/actions/cancel": WRITE,
}


def action_key(method: str, route_path: str) -> str:
    return f"{'GET' if method == 'HEAD' else method} {route_path}"


def allowed(roles: frozenset[str], action: str) -> bool:
    return bool(roles & POLICY.get(action, frozenset()))


def authorize(roles: frozenset[str], action: str) -> None:
    if not allowed(roles, action):
        held = ", ".join(sorted(roles)) or "no role"
        raise Forbidden(f"{held} may not {action}")
