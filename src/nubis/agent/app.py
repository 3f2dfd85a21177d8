"""The agent's HTTP API: the control plane puts the state it wants, reads what is there.

Every request carries the host's agent token (``Authorization: Bearer ...``); the
API changes nothing but the host's overlay devices (``nvx-*``) and VLAN devices
(``nvl-*``) with their bridges. The work is done
in a worker thread, one change at a time.
"""

from __future__ import annotations

import secrets
import threading
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from nubis.agent import overlay, vlan

_bearer = HTTPBearer(auto_error=False)


def create_app(token: str) -> FastAPI:
    app = FastAPI(title="nubis-agent", docs_url=None, redoc_url=None, openapi_url=None)
    lock = threading.Lock()  # one change to the host's links at a time

    def authorized(
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> None:
        if creds is None or not secrets.compare_digest(creds.credentials, token):
            raise HTTPException(401, "a valid agent token is needed")

    auth = [Depends(authorized)]

    @app.get("/v1/capabilities", dependencies=auth)
    def capabilities() -> dict[str, Any]:
        """What this host's kernel can carry (VLAN: why not, when it cannot)."""
        reason = vlan.support()
        return {"vxlan": True, "vlan": reason is None, "vlan_reason": reason}

    @app.put("/v1/vlans/{device}", status_code=204, dependencies=auth)
    def put_vlan(device: str, state: vlan.VlanState) -> Response:
        with lock:
            try:
                vlan.apply(device, state)
            except overlay.AgentError as exc:
                raise HTTPException(409, str(exc)) from exc
        return Response(status_code=204)

    @app.delete("/v1/vlans/{device}", status_code=204, dependencies=auth)
    def delete_vlan(device: str, bridge: str) -> Response:
        with lock:
            try:
                vlan.remove(device, bridge)
            except overlay.AgentError as exc:
                raise HTTPException(409, str(exc)) from exc
        return Response(status_code=204)

    @app.get("/v1/overlays", dependencies=auth)
    def list_overlays() -> dict[str, dict[str, Any]]:
        return overlay.describe()

    @app.put("/v1/overlays/{device}", status_code=204, dependencies=auth)
    def put_overlay(device: str, state: overlay.OverlayState) -> Response:
        with lock:
            try:
                overlay.apply(device, state)
            except overlay.AgentError as exc:
                raise HTTPException(409, str(exc)) from exc
        return Response(status_code=204)

    @app.delete("/v1/overlays/{device}", status_code=204, dependencies=auth)
    def delete_overlay(device: str) -> Response:
        with lock:
            try:
                overlay.remove(device)
            except overlay.AgentError as exc:
                raise HTTPException(409, str(exc)) from exc
        return Response(status_code=204)

    return app
