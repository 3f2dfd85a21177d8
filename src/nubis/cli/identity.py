"""CLI commands of identity: users, projects, roles, quotas, API keys, the audit log."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from nubis.cli.client import console, fail, request, show
from nubis.cli.resources import Fmt

user_app = typer.Typer(help="Users (security administrator)", no_args_is_help=True)
project_app = typer.Typer(help="Projects (tenants)", no_args_is_help=True)
role_app = typer.Typer(help="Roles of users in projects", no_args_is_help=True)
quota_app = typer.Typer(help="Project quotas and usage", no_args_is_help=True)
apikey_app = typer.Typer(help="Your API keys (signed requests)", no_args_is_help=True)
audit_app = typer.Typer(help="The audit log (auditor)", no_args_is_help=True)

USER_COLS = ["username", "system_role", "enabled", "locked_until", "projects", "id"]
PROJECT_COLS = ["name", "description", "id"]
KEY_COLS = ["name", "id", "project_id", "created_at", "last_used_at", "revoked_at"]
AUDIT_COLS = ["created_at", "username", "action", "resource_type", "resource_id", "status_code"]
Password = Annotated[
    str,
    typer.Option(
        prompt=True, hide_input=True, confirmation_prompt=True, envvar="NUBIS_NEW_PASSWORD"
    ),
]


@user_app.command("list")
def user_list(fmt: Fmt = "table") -> None:
    show(request("GET", "/users", params={"limit": 1000}).json(), fmt, USER_COLS)


@user_app.command("create")
def user_create(
    username: str,
    password: Password,
    system_role: Annotated[
        str | None, typer.Option(help="system_admin, security_admin or auditor")
    ] = None,
    fmt: Fmt = "table",
) -> None:
    body = {"username": username, "password": password, "system_role": system_role}
    created = request("POST", "/users", json=body).json()
    pending = created.pop("pending_approval", None)
    show(created, fmt, USER_COLS)
    if pending is not None:
        _pending(pending)


@user_app.command("show")
def user_show(username: str, fmt: Fmt = "table") -> None:
    show(request("GET", f"/users/{username}").json(), fmt, USER_COLS)


@user_app.command("set-password")
def user_set_password(username: str, password: Password) -> None:
    """Reset a user's password (its tokens end)."""
    resp = request("PATCH", f"/users/{username}", json={"password": password})
    if resp.status_code == 202:
        _pending(resp.json())
    else:
        console.print(f"password of {username} changed")


@user_app.command("set-system-role")
def user_set_system_role(
    username: str, role: Annotated[str, typer.Argument(help="a system role, or none")]
) -> None:
    """Give a system role (once a second security administrator approves) or take it
    away (none)."""
    body = {"system_role": None if role == "none" else role}
    resp = request("PUT", f"/users/{username}/system-role", json=body)
    if resp.status_code == 202:
        _pending(resp.json())
    else:
        console.print(f"{username}: system role {role}")


def _pending(approval: dict) -> None:
    console.print(
        f"waiting for a second security administrator: approval {approval['id']} "
        f"({approval['kind']} of {approval['username']}); they run "
        f"`nubis user approve {approval['id']}`"
    )


APPROVAL_COLS = ["id", "kind", "username", "system_role", "requested_by_name", "expires_at"]


@user_app.command("approvals")
def user_approvals(fmt: Fmt = "table") -> None:
    """Requests waiting for a second security administrator."""
    show(request("GET", "/approvals").json(), fmt, APPROVAL_COLS)


@user_app.command("approve")
def user_approve(approval_id: str) -> None:
    """Approve another security administrator's request: it is applied now."""
    done = request("POST", f"/approvals/{approval_id}/actions/approve").json()
    console.print(f"approved: {done['kind']} of {done['username']}")


@user_app.command("reject")
def user_reject(approval_id: str) -> None:
    request("POST", f"/approvals/{approval_id}/actions/reject")
    console.print(f"approval {approval_id} rejected")


def _user_action(username: str, action: str) -> None:
    request("POST", f"/users/{username}/actions/{action}")
    console.print(f"{username}: {action}d" if action.endswith("e") else f"{username}: {action}ed")


@user_app.command("disable")
def user_disable(username: str) -> None:
    """Disable a user: its tokens and API keys stop working at once."""
    _user_action(username, "disable")


@user_app.command("enable")
def user_enable(username: str) -> None:
    _user_action(username, "enable")


@user_app.command("unlock")
def user_unlock(username: str) -> None:
    """Lift a lockout after too many failed logins."""
    _user_action(username, "unlock")


@user_app.command("delete")
def user_delete(username: str) -> None:
    request("DELETE", f"/users/{username}")
    console.print(f"user {username} deleted")


@user_app.command("password-policy")
def password_policy(
    min_length: int | None = None,
    history: int | None = None,
    max_failed_logins: int | None = None,
    lockout_seconds: int | None = None,
    fmt: Fmt = "table",
) -> None:
    """Show the password policy, or change the values given."""
    changes = {
        k: v
        for k, v in {
            "min_length": min_length,
            "history": history,
            "max_failed_logins": max_failed_logins,
            "lockout_seconds": lockout_seconds,
        }.items()
        if v is not None
    }
    if changes:
        data = request("PUT", "/password-policy", json=changes).json()
    else:
        data = request("GET", "/password-policy").json()
    show(data, fmt, [])


@project_app.command("list")
def project_list(fmt: Fmt = "table") -> None:
    show(request("GET", "/projects", params={"limit": 1000}).json(), fmt, PROJECT_COLS)


@project_app.command("create")
def project_create(name: str, description: str = "", fmt: Fmt = "table") -> None:
    body = {"name": name, "description": description}
    show(request("POST", "/projects", json=body).json(), fmt, PROJECT_COLS)


@project_app.command("delete")
def project_delete(name: str) -> None:
    request("DELETE", f"/projects/{name}")
    console.print(f"project {name} deleted")


@project_app.command("members")
def project_members(name: str, fmt: Fmt = "table") -> None:
    show(request("GET", f"/projects/{name}/members").json(), fmt, ["username", "role", "user_id"])


@role_app.command("grant")
def role_grant(
    username: str,
    role: Annotated[str, typer.Argument(help="admin, member or reader")],
    project: Annotated[str, typer.Option(help="the project")],
) -> None:
    request("PUT", f"/projects/{project}/members/{username}", json={"role": role})
    console.print(f"{username} is {role} of project {project}")


@role_app.command("revoke")
def role_revoke(username: str, project: Annotated[str, typer.Option(help="the project")]) -> None:
    request("DELETE", f"/projects/{project}/members/{username}")
    console.print(f"{username} has no role in project {project} any more")


def _show_quotas(data: dict, fmt: str) -> None:
    rows = [{"resource": k, **v} for k, v in data["quotas"].items()]
    show(data if fmt == "json" else rows, fmt, ["resource", "in_use", "limit"])


@quota_app.command("show")
def quota_show(
    project: Annotated[str | None, typer.Option(help="default: your project")] = None,
    fmt: Fmt = "table",
) -> None:
    path = f"/projects/{project}/quotas" if project else "/quotas"
    _show_quotas(request("GET", path).json(), fmt)


@quota_app.command("set")
def quota_set(
    project: str,
    limits: Annotated[
        list[str], typer.Argument(help="resource=limit, e.g. instances=10 (-1: none)")
    ],
    fmt: Fmt = "table",
) -> None:
    body: dict[str, int] = {}
    for item in limits:
        name, _, value = item.partition("=")
        try:
            body[name] = int(value)
        except ValueError:
            raise fail(f"{item!r} is not resource=number") from None
    _show_quotas(request("PUT", f"/projects/{project}/quotas", json=body).json(), fmt)


@apikey_app.command("list")
def apikey_list(fmt: Fmt = "table") -> None:
    show(request("GET", "/api-keys").json(), fmt, KEY_COLS)


@apikey_app.command("create")
def apikey_create(name: str, fmt: Fmt = "table") -> None:
    """A key for your current project; its secret is shown this once."""
    data = request("POST", "/api-keys", json={"name": name}).json()
    show(data, fmt, [])
    if fmt != "json":
        console.print(
            "use it with: NUBIS_API_KEY=<id> NUBIS_API_SECRET=<secret> nubis ... "
            "(the secret is not shown again)"
        )


@apikey_app.command("revoke")
def apikey_revoke(key_id: str) -> None:
    request("DELETE", f"/api-keys/{key_id}")
    console.print(f"API key {key_id} revoked")


@audit_app.command("list")
def audit_list(
    username: str | None = None,
    action: str | None = None,
    since: str | None = None,
    limit: int = 100,
    fmt: Fmt = "table",
) -> None:
    params = {"username": username, "action": action, "since": since, "limit": limit}
    data = request("GET", "/audit", params={k: v for k, v in params.items() if v}).json()
    show(data, fmt, AUDIT_COLS)


@audit_app.command("export")
def audit_export(
    output: Annotated[Path | None, typer.Option("-o", help="file (default: stdout)")] = None,
    export_format: Annotated[str, typer.Option("--as", help="csv or json")] = "csv",
    since: str | None = None,
    until: str | None = None,
) -> None:
    params = {"format": export_format, "since": since, "until": until}
    resp = request("GET", "/audit/export", params={k: v for k, v in params.items() if v})
    if output is None:
        sys.stdout.write(resp.text)
    else:
        output.write_text(resp.text)
        lines = len(resp.text.splitlines()) - (1 if export_format == "csv" else 0)
        console.print(f"{lines} record(s) written to {output}")


def whoami(fmt: Fmt = "table") -> None:
    """Who you are: user, project, roles."""
    data = request("GET", "/auth/whoami").json()
    show(data if fmt == "json" else {**data, "roles": json.dumps(data["roles"])}, fmt, [])
