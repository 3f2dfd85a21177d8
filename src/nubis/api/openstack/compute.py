"""Nova v2.1: version discovery and the microversion every compute request is served at.

Nubis serves the 2.1 shapes (``MIN_VERSION`` to ``MAX_VERSION``); a request for a
newer microversion is refused with 406 as Nova refuses one it does not know, and
``latest`` means ``MAX_VERSION``. Clients (openstacksdk, the ``openstack`` CLI)
negotiate from the discovery document and send at most ``MAX_VERSION``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nubis.api.openstack import links
from nubis.api.openstack.errors import fault

MIN_VERSION = "2.1"
MAX_VERSION = "2.1"
HEADER = "OpenStack-API-Version"
LEGACY_HEADER = "X-OpenStack-Nova-API-Version"

router = APIRouter(prefix="/compute", tags=["openstack compute"])


def _version(request: Request) -> dict[str, Any]:
    return {
        "id": "v2.1",
        "status": "CURRENT",
        "version": MAX_VERSION,
        "min_version": MIN_VERSION,
        "updated": "2013-07-23T11:33:21Z",
        "links": [{"rel": "self", "href": links.service_url(request, "compute") + "/"}],
        "media-types": [
            {
                "base": "application/json",
                "type": "application/vnd.openstack.compute+json;version=2.1",
            }
        ],
    }


@router.get("")
@router.get("/")
def versions(request: Request) -> dict[str, Any]:
    return {"versions": [_version(request)]}


@router.get("/v2.1")
@router.get("/v2.1/")
def version(request: Request) -> dict[str, Any]:
    return {"version": _version(request)}


def _parse(value: str) -> tuple[int, int]:
    major, _, minor = value.strip().partition(".")
    return int(major), int(minor)


def requested_version(headers: dict[str, str]) -> str | None:
    """The compute microversion the request asks for, or None for the default."""
    for raw in headers.get(HEADER.lower(), "").split(","):
        service, _, value = raw.strip().partition(" ")
        if service.lower() == "compute" and value:
            return value.strip()
    return headers.get(LEGACY_HEADER.lower())


class VersionRefused(ValueError):
    """A microversion that cannot be served: malformed (400) or out of range (406)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def check_version(asked: str | None) -> str:
    """The microversion to serve; VersionRefused when it cannot be served."""
    if asked is None:
        return MIN_VERSION
    if asked.strip().lower() == "latest":
        return MAX_VERSION
    try:
        wanted = _parse(asked)
    except ValueError:
        raise VersionRefused(f"invalid microversion {asked!r}: use MAJOR.MINOR", 400) from None
    if not _parse(MIN_VERSION) <= wanted <= _parse(MAX_VERSION):
        raise VersionRefused(
            f"microversion {asked} is not supported: Nubis serves {MIN_VERSION} to {MAX_VERSION}",
            406,
        )
    return asked.strip()


class Microversions:
    """ASGI middleware: refuses an unsupported compute microversion and names the one
    served in every compute answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or "/compute/v2.1/" not in path + "/":
            await self.app(scope, receive, send)
            return
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        try:
            served = check_version(requested_version(headers))
        except VersionRefused as exc:
            response = fault(path, exc.status, str(exc))
            await response(scope, receive, send)
            return

        async def send_with_version(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = [
                    (HEADER.encode(), f"compute {served}".encode()),
                    (LEGACY_HEADER.encode(), served.encode()),
                    (b"Vary", f"{HEADER}, {LEGACY_HEADER}".encode()),
                ]
                message["headers"] = list(message.get("headers", [])) + extra
            await send(message)

        await self.app(scope, receive, send_with_version)
