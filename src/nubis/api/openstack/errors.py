"""Errors in the shapes the OpenStack clients parse.

Nova, Cinder and Glance answer ``{"itemNotFound": {"code": 404, "message": ...}}``
(the key names the fault), Keystone ``{"error": {"code", "title", "message"}}`` and
Neutron ``{"NeutronError": {"type", "message", "detail"}}``.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError, OperationalError
from starlette.exceptions import HTTPException

from nubis.api.errors import DATABASE_DOWN, RETRY_AFTER, describe
from nubis.services.core.errors import ServiceError

FAULTS = {
    400: ("badRequest", "Bad Request", "BadRequest"),
    401: ("unauthorized", "Unauthorized", "NotAuthorized"),
    403: ("forbidden", "Forbidden", "PolicyNotAuthorized"),
    404: ("itemNotFound", "Not Found", "NotFound"),
    405: ("badMethod", "Method Not Allowed", "BadMethod"),
    406: ("notAcceptable", "Not Acceptable", "NotAcceptable"),
    409: ("conflictingRequest", "Conflict", "Conflict"),
    413: ("overLimit", "Request Entity Too Large", "OverQuota"),
    415: ("badMediaType", "Unsupported Media Type", "BadMediaType"),
    501: ("notImplemented", "Not Implemented", "NotImplemented"),
    503: ("serviceUnavailable", "Service Unavailable", "ServiceUnavailable"),
}


class NotSupported(ServiceError):
    """A call the OpenStack API has and Nubis does not offer (yet)."""

    status = 501
    code = "not_implemented"


def fault(path: str, status: int, message: str) -> JSONResponse:
    """The error body for ``path``'s service."""
    nova_key, title, neutron_type = FAULTS.get(status, ("computeFault", "Error", "Error"))
    if "/identity/" in path:
        body = {"error": {"code": status, "title": title, "message": message}}
    elif "/network/" in path:
        body = {"NeutronError": {"type": neutron_type, "message": message, "detail": ""}}
    else:
        body = {nova_key: {"code": status, "message": message}}
    headers = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Keystone uri="/openstack/identity/v3"'
    return JSONResponse(status_code=status, content=body, headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(req: Request, exc: ServiceError) -> JSONResponse:
        status = exc.status
        if status == 409 and exc.message.startswith("quota exceeded"):
            status = 413  # what Nova answers when a quota is exceeded
        return fault(req.url.path, status, exc.message)

    @app.exception_handler(IntegrityError)
    async def integrity_error(req: Request, _exc: IntegrityError) -> JSONResponse:
        return fault(req.url.path, 409, "a concurrent change conflicts with this request")

    @app.exception_handler(OperationalError)
    async def database_down(req: Request, _exc: OperationalError) -> JSONResponse:
        response = fault(req.url.path, 503, DATABASE_DOWN)
        response.headers.update(RETRY_AFTER)
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(req: Request, exc: RequestValidationError) -> JSONResponse:
        return fault(req.url.path, 400, "Invalid input: " + describe(exc))

    @app.exception_handler(HTTPException)
    async def http_error(req: Request, exc: HTTPException) -> JSONResponse:
        message = str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"{req.method} {req.url.path} is not part of the API Nubis offers"
        return fault(req.url.path, exc.status_code, message)
