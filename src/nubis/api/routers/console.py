"""The VNC console: a one-time ticket, and the websocket that carries VNC (RFB) to noVNC."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import anyio
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import BaseModel

from nubis.api.deps import PlatformDep, PrincipalDep
from nubis.services.errors import ServiceError

router = APIRouter(tags=["console"])
log = logging.getLogger(__name__)
CHUNK = 64 * 1024
# a websocket close code in the private range: the ticket was refused
TICKET_REFUSED = 4401


class ConsoleTicketOut(BaseModel):
    ticket: str
    password: str  # the VNC password, valid as long as the ticket
    expires_at: str
    websocket: str  # path of the websocket; add ?ticket=<ticket>


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


@router.websocket("/console/{instance_id}/websocket")
async def console_websocket(websocket: WebSocket, instance_id: str, ticket: str = "") -> None:
    """RFB over a binary websocket, to the instance's VNC server on its host. The
    ticket is the only credential (a browser cannot set headers on a websocket)."""
    platform = websocket.app.state.platform
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
