"""Signing in and out of the console: the API's login, its token kept in a cookie."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from nubis.api import audit_trail, web_session
from nubis.api.deps import PlatformDep, client_address
from nubis.api.web.render import Me, render
from nubis.services.core.errors import ServiceError
from nubis.services.identity import auth

router = APIRouter(include_in_schema=False)


def safe_next(target: str | None) -> str:
    """Only a path of this site (never ``//other.example``) is followed after login."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/dashboard"


@router.get("/")
def home(request: Request) -> Response:
    signed_in = web_session.SESSION_COOKIE in request.cookies
    return RedirectResponse("/dashboard" if signed_in else "/login", status_code=303)


def _login_form(request: Request, target: str, error: str | None, status: int) -> HTMLResponse:
    token = web_session.new_login_csrf()
    data = {"login_csrf": token, "next": target, "error": error}
    response = render(request, None, "login.html", data, status)
    response.set_cookie(
        web_session.LOGIN_CSRF_COOKIE,
        token,
        max_age=3600,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/login",
    )
    return response


@router.get("/login")
def login_page(request: Request, next: str | None = None) -> HTMLResponse:
    return _login_form(request, safe_next(next), None, 200)


@router.post("/login")
async def login(
    request: Request,
    platform: PlatformDep,
    username: Annotated[str, Form(max_length=64)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    csrf_token: Annotated[str, Form(max_length=128)] = "",
    next: Annotated[str, Form(max_length=2048)] = "",
) -> Response:
    target = safe_next(next)
    audit_trail.note_username(request.scope, username)
    try:
        web_session.check_login_csrf(request.cookies.get(web_session.LOGIN_CSRF_COOKIE), csrf_token)
        if not username or not password:
            return _login_form(request, target, "Enter your user name and password.", 400)
        ttl = platform.settings.token_ttl_seconds
        token, _expiry, principal = await anyio.to_thread.run_sync(
            auth.login,
            platform.db,
            username,
            password,
            ttl,
            None,
            client_address(request),
            platform.login_throttle,
        )
    except ServiceError as exc:
        return _login_form(request, target, exc.message, exc.status)
    audit_trail.note_principal(request.scope, principal)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        web_session.SESSION_COOKIE,
        token,
        max_age=ttl,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    response.delete_cookie(web_session.LOGIN_CSRF_COOKIE, path="/login")
    return response


@router.post("/logout")
def logout(
    request: Request,
    platform: PlatformDep,
    principal: Me,
    csrf_token: Annotated[str, Form(max_length=128)] = "",
) -> Response:
    token = request.cookies[web_session.SESSION_COOKIE]
    try:
        web_session.check_csrf(request.app.state.csrf_key, token, csrf_token)
    except ServiceError as exc:
        return render(request, principal, "error.html", {"error": exc.message}, exc.status)
    audit_trail.note_principal(request.scope, principal)
    if principal.token_id is not None:
        with platform.db.begin() as s:
            auth.revoke(s, principal.token_id)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(web_session.SESSION_COOKIE, path="/")
    return response
