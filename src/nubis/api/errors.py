"""Every error leaves the API as ``{"error": {"code": ..., "message": ...}}``."""

from __future__ import annotations

import json

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError, OperationalError
from starlette.exceptions import HTTPException
from starlette.types import Send

from nubis.services.core.errors import ServiceError

# what every API answers (503) while the database cannot be reached: nothing was
# changed, and the request can be made again once it is back
DATABASE_DOWN = "the database cannot be reached: nothing was changed, try again shortly"
RETRY_AFTER = {"Retry-After": "5"}


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"code": code, "message": message}})


async def send_error(
    send: Send, status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> None:
    """The same error shape, sent by an ASGI middleware that answers before any route."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    extra = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def describe(exc: RequestValidationError) -> str:
    """What a request failed validation on, field by field."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
    return "; ".join(parts) or "invalid request"


def install(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(_req: Request, exc: ServiceError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message)

    @app.exception_handler(IntegrityError)
    async def integrity_error(_req: Request, _exc: IntegrityError) -> JSONResponse:
        # a uniqueness check lost a race with a concurrent request: nothing was written
        return error_response(409, "conflict", "a concurrent change conflicts with this request")

    @app.exception_handler(OperationalError)
    async def database_down(_req: Request, _exc: OperationalError) -> JSONResponse:
        response = error_response(503, "unavailable", DATABASE_DOWN)
        response.headers.update(RETRY_AFTER)
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(_req: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_request", describe(exc))

    @app.exception_handler(HTTPException)
    async def http_error(_req: Request, exc: HTTPException) -> JSONResponse:
        code = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed"}.get(
            exc.status_code, "error"
        )
        response = error_response(exc.status_code, code, str(exc.detail))
        if exc.headers:
            response.headers.update(exc.headers)
        return response
