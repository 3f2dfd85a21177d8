"""Rendering the console's pages: the signed-in caller, the templates, the policy.

A page shows what the API would show the same caller: its data comes from the
API's own route functions, each called only after ``policy.authorize`` allowed
the API route it mirrors, and every button is drawn only when the policy allows
the API route the button calls.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from nubis.api import web_session
from nubis.api.deps import PlatformDep
from nubis.services.core.errors import ServiceError, Unauthorized
from nubis.services.core.principal import Principal
from nubis.services.identity import auth, policy

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")

# (label, page, the API route whose policy decides whether the page is listed)
NAV = (
    ("Dashboard", "/dashboard", "GET /auth/whoami"),
    ("Instances", "/instances", "GET /instances"),
    ("Hosts", "/hosts", "GET /hosts"),
    ("Images", "/images", "GET /images"),
    ("Flavors", "/flavors", "GET /flavors"),
    ("Volumes", "/volumes", "GET /volumes"),
    ("Networks", "/networks", "GET /networks"),
    ("Routers", "/routers", "GET /routers"),
    ("Floating IPs", "/floating-ips", "GET /floating-ips"),
    ("Events", "/events", "GET /events"),
    ("Alarms", "/alarms", "GET /alarms"),
    ("Usage", "/usage", "GET /usage/report"),
    ("Projects", "/projects", "GET /projects"),
    ("Users", "/users", "GET /users"),
    ("Audit", "/audit", "GET /audit"),
)


class LoginRequired(Exception):
    """No valid session: the browser is sent to the login page."""


def login_redirect(request: Request, _exc: Exception) -> Response:
    target = request.url.path
    if request.url.query:
        target += "?" + request.url.query
    url = f"/login?next={quote(target)}"
    if request.headers.get("hx-request"):  # a background refresh: htmx follows this header
        return Response(status_code=204, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


def _session_principal(platform: PlatformDep, request: Request) -> Principal:
    token = request.cookies.get(web_session.SESSION_COOKIE)
    if not token:
        raise LoginRequired()
    try:
        with platform.db.begin() as s:
            principal = auth.authenticate(s, token)
    except Unauthorized as exc:
        raise LoginRequired() from exc
    request.state.csrf = web_session.csrf_token(request.app.state.csrf_key, token)
    return principal


Me = Annotated[Principal, Depends(_session_principal)]


def can(principal: Principal, action: str) -> bool:
    return policy.allowed(principal.roles, action)


def render(
    request: Request,
    principal: Principal | None,
    name: str,
    data: dict[str, Any] | None = None,
    status: int = 200,
) -> HTMLResponse:
    context: dict[str, Any] = {
        "me": principal,
        "csrf": getattr(request.state, "csrf", ""),
        "status_code": status,
        **(data or {}),
    }
    if principal is not None:
        context["can"] = lambda action: can(principal, action)
        context["nav"] = [(label, href) for label, href, need in NAV if can(principal, need)]
    return templates.TemplateResponse(request, name, context, status_code=status)


def page(
    request: Request,
    principal: Principal,
    action: str,
    name: str,
    load: Callable[[], dict[str, Any]],
) -> HTMLResponse:
    """Render ``name`` with what ``load`` returns, if the caller may ``action``; an
    error page with the API's status and message otherwise."""
    try:
        policy.authorize(principal.roles, action)
        data = load()
    except ServiceError as exc:
        return render(request, principal, "error.html", {"error": exc.message}, exc.status)
    return render(request, principal, name, data)
