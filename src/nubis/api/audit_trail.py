"""ASGI middleware writing one audit record per mutating request and login attempt.

Only requests a route took are recorded (a flood of made-up paths writes nothing),
not those a throttle refused (429: the block itself is recorded once, see
``services/throttle``), and the parameters kept are bounded (``audit.bounded``).

The record is committed before the response leaves: a client that saw the answer
can find the record. The caller is noted by the authentication dependency
(``note_principal``); for a login, by the login route, or from the user name sent.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nubis.db.models import AuditRecord
from nubis.db.session import Database
from nubis.services.core.principal import Principal
from nubis.services.identity import audit, policy

log = logging.getLogger(__name__)
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LOGIN_ROUTE = "/auth/tokens"
MAX_CAPTURE = 256 * 1024


def note_principal(scope: Scope, principal: Principal) -> None:
    note = scope.get("state", {}).get("audit")
    if note is not None:
        note["principal"] = principal


def note_username(scope: Scope, username: str) -> None:
    """The user name a login tried (recorded even when the login fails)."""
    note = scope.get("state", {}).get("audit")
    if note is not None:
        note["username"] = username[:64] or None


def _json(data: bytes) -> Any:
    try:
        return json.loads(data) if data else None
    except ValueError:
        return None


def _resource(
    method: str, route_path: str | None, params: dict[str, str], created: Any
) -> tuple[str | None, str | None]:
    """The resource a request is about: ``("instances", <ref>)`` for
    ``/instances/{ref}/actions/start``; for a create, the new row's id."""
    if route_path is None:
        return None, None
    parts = [p for p in route_path.strip("/").split("/") if p]
    if "actions" in parts:
        parts = parts[: parts.index("actions")]
    new_id = created.get("id") if isinstance(created, dict) else None
    if parts and not parts[-1].startswith("{") and method == "POST":
        return parts[-1], str(new_id) if new_id else None
    pairs = [
        (parts[i], parts[i + 1].strip("{}"))
        for i in range(len(parts) - 1)
        if not parts[i].startswith("{") and parts[i + 1].startswith("{")
    ]
    if not pairs:
        return (parts[0] if parts else None), None
    kind, param = pairs[-1]
    return kind, params.get(param)


class AuditTrail:
    def __init__(self, app: ASGIApp, db: Database) -> None:
        self.app = app
        self.db = db

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in MUTATING:
            await self.app(scope, receive, send)
            return
        note: dict[str, Any] = {}
        scope.setdefault("state", {})["audit"] = note
        headers = {k.decode().lower(): v.decode("latin-1") for k, v in scope["headers"]}
        capture = headers.get("content-type", "").startswith("application/json")
        body = bytearray()
        held: list[Message] = []
        answer = bytearray()
        written = False

        async def recv() -> Message:
            message = await receive()
            if capture and message["type"] == "http.request" and len(body) < MAX_CAPTURE:
                body.extend(message.get("body", b""))
            return message

        async def write(status: int) -> None:
            nonlocal written
            written = True
            if scope.get("route") is None:
                return  # no route took it (a 404 for a made-up path): nothing changed
            if status == 429:
                return  # throttled before anything was looked at: the block is recorded
            record = self._record(scope, headers, note, bytes(body), bytes(answer), status)
            try:
                await anyio.to_thread.run_sync(self._store, record)
            except Exception:  # the change is done: answer it, and say loudly what failed
                log.exception("could not write the audit record of %s", record.action)

        async def snd(message: Message) -> None:
            if written:
                await send(message)
                return
            held.append(message)
            if message["type"] == "http.response.body":
                if len(answer) < MAX_CAPTURE:
                    answer.extend(message.get("body", b""))
                if not message.get("more_body", False):
                    start = next(m for m in held if m["type"] == "http.response.start")
                    await write(start["status"])
                    for m in held:
                        await send(m)
                    held.clear()

        try:
            await self.app(scope, recv, snd)
        except BaseException:
            if not written:
                await write(500)
            raise

    @staticmethod
    def _record(
        scope: Scope,
        headers: dict[str, str],
        note: dict[str, Any],
        body: bytes,
        answer: bytes,
        status: int,
    ) -> AuditRecord:
        method = scope["method"]
        route = scope.get("route")
        route_path = getattr(route, "path", None)
        action = policy.action_key(method, route_path or scope["path"])
        params = _json(body)
        principal: Principal | None = note.get("principal")
        username = principal.username if principal else note.get("username")
        if username is None and route_path == LOGIN_ROUTE and isinstance(params, dict):
            username = str(params.get("username", ""))[:64] or None
        kind, ident = _resource(method, route_path, scope.get("path_params", {}), _json(answer))
        client = scope.get("client")
        return AuditRecord(
            user_id=principal.user_id if principal else None,
            username=username,
            project_id=principal.project_id if principal else None,
            roles=",".join(sorted(principal.roles)) if principal else "",
            api_key_id=principal.api_key_id if principal else None,
            action=action[:128],
            method=method,
            path=scope["path"][:512],
            resource_type=kind[:32] if kind else None,
            resource_id=ident[:255] if ident else None,
            params=audit.bounded(audit.redact(params)) if isinstance(params, dict | list) else None,
            source_ip=client[0] if client else None,
            success=status < 400,
            status_code=status,
        )

    def _store(self, record: AuditRecord) -> None:
        with self.db.begin() as s:
            s.add(record)
