"""Logins from an address known to be blocked (``services/throttle``) are answered
429 here, before any route, body parsing or database work, and only after a pause
that costs the server nothing (the event loop waits, no thread is held): a flood
of guesses from one address is slowed to one answer per pause per connection."""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Receive, Scope, Send

from nubis.api.errors import send_error
from nubis.services.identity.throttle import AddressThrottle

LOGIN_PATHS = frozenset({"/api/v1/auth/tokens", "/openstack/identity/v3/auth/tokens", "/login"})
PAUSE = 1.0  # seconds a refused login waits for its answer


class LoginGate:
    def __init__(self, app: ASGIApp, throttle: AddressThrottle, pause: float = PAUSE) -> None:
        self.app = app
        self.throttle = throttle
        self.pause = pause

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in LOGIN_PATHS:
            client = scope.get("client")
            left = self.throttle.blocked_for(client[0] if client else None)
            if left is not None:
                await asyncio.sleep(self.pause)
                await self._refuse(send, int(left) + 1)
                return
        await self.app(scope, receive, send)

    @staticmethod
    async def _refuse(send: Send, retry_after: int) -> None:
        message = f"too many failed logins from this address: try again in {retry_after} s"
        await send_error(send, 429, "too_many_requests", message, {"retry-after": str(retry_after)})
