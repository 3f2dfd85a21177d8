"""The VNC console: a one-time ticket, and the websocket that carries VNC (RFB) to noVNC."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from urllib.parse import urlsplit

import anyio
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import BaseModel

from nubis.api.deps import PlatformDep, PrincipalDep
from nubis.services.core.errors import ServiceError

router = APIRouter(tags=["console"])
log = logging.getLogger(__name__)
CHUNK = 64 * 1024
# a websocket close code in the private range: the ticket was refused
TICKET_REFUSED = 4401
ORIGIN_REFUSED = 4403
TICKET_PROTOCOL = "nubis-ticket."


class ConsoleTicketOut(BaseModel):
    ticket: str
    password: str  # the VNC password, valid as long as the ticket
    expires_at: str
    # path of the websocket; the ticket goes as subprotocol "nubis-ticket.<ticket>" (or,
    # for clients that cannot, as ?ticket=<ticket>)
    websocket: str


@router.post("/instances/{ref}/console", status_code=201)
def console_ticket(ref: str, platform: PlatformDep, principal: PrincipalDep) -> ConsoleTicketOut:
    """A one-time console ticket for a running instance (valid one minute, one use)."""
    ticket = platform.console.issue(principal, ref)
    return ConsoleTicketOut(
        ticket=ticket.ticket,
        password=ticket.password,
        expires_at=ticket.expires_at.isoformat(),
        websocket=f"/api/v1/console/{ticket.instance_id}/websocket",
    )


def _same_origin(websocket: WebSocket) -> bool:
    """A browser names the page that opened the websocket (Origin): it must be one of
    this server's. Clients that are not browsers send no Origin."""
    origin = websocket.headers.get("origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc == websocket.headers.get("host", "")


def _ticket(websocket: WebSocket, query: str) -> str:
    """The ticket, from a subprotocol ``nubis-ticket.<ticket>`` (the web console sends
    it so: it never appears in a URL or a log) or from the query string."""
    for protocol in websocket.scope.get("subprotocols", []):
        if protocol.startswith(TICKET_PROTOCOL):
            return protocol[len(TICKET_PROTOCOL) :]
    return query


@router.websocket("/console/{instance_id}/websocket")
async def console_websocket(websocket: WebSocket, instance_id: str, ticket: str = "") -> None:
    """RFB over a binary websocket, to the instance's VNC server on its host. The
    ticket is the only credential (a browser cannot set headers on a websocket);
    a page of another site cannot open it (Origin)."""
    platform = websocket.app.state.platform
    if not _same_origin(websocket):
        await websocket.close(code=ORIGIN_REFUSED, reason="the console opens from this site only")
        return
    ticket = _ticket(websocket, ticket)
    try:
        endpoint = await anyio.to_thread.run_sync(platform.console.spend, instance_id, ticket)
    except ServiceError as exc:
        await websocket.close(code=TICKET_REFUSED, reason=exc.message[:120])
        return
    try:
        reader, writer = await asyncio.open_connection(endpoint.address, endpoint.port)
    except OSError as exc:
        await websocket.close(code=1011, reason=f"VNC server unreachable: {exc}"[:120])
        return
    wanted = websocket.scope.get("subprotocols", [])
    await websocket.accept(subprotocol="binary" if "binary" in wanted else None)
    await _pump(websocket, reader, writer)


async def _pump(
    websocket: WebSocket, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    async def to_vnc() -> None:
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                data = message.get("bytes") or (message.get("text") or "").encode()
                writer.write(data)
                await writer.drain()

    async def to_browser() -> None:
        while data := await reader.read(CHUNK):
            await websocket.send_bytes(data)

    tasks = [asyncio.create_task(to_vnc()), asyncio.create_task(to_browser())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        writer.close()
        with contextlib.suppress(Exception):
            await websocket.close()
