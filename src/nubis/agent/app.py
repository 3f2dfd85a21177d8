"""The agent's HTTP API: the control plane puts the state it wants, reads what is there.

Every request carries the host's agent token (``Authorization: Bearer ...``); the
API changes nothing but the host's overlay devices (``nvx-*``), VLAN devices
(``nvl-*``) with their bridges, router namespaces (``nqr-*``) with their legs, the
DHCP options files of Nubis's networks and the guard of libvirt's packet filters.
The work is done in a worker thread, one change at a time.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from nubis.agent import nwfilter_guard, overlay, router, vlan

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

    def change(fn: Callable[..., object], *args: Any) -> Response:
        """One change to the host's links at a time; a refusal is a 409 saying why."""
        with lock:
            try:
                fn(*args)
            except overlay.AgentError as exc:
                raise HTTPException(409, str(exc)) from exc
        return Response(status_code=204)

    @app.put("/v1/nwfilter-guard", status_code=204, dependencies=auth)
    def put_guard() -> Response:
        return change(nwfilter_guard.ensure)

    @app.put("/v1/vlans/{device}", status_code=204, dependencies=auth)
    def put_vlan(device: str, state: vlan.VlanState) -> Response:
        return change(vlan.apply, device, state)

    @app.delete("/v1/vlans/{device}", status_code=204, dependencies=auth)
    def delete_vlan(device: str, bridge: str) -> Response:
        return change(vlan.remove, device, bridge)

    @app.get("/v1/overlays", dependencies=auth)
    def list_overlays() -> dict[str, dict[str, Any]]:
        return overlay.describe()

    @app.put("/v1/overlays/{device}", status_code=204, dependencies=auth)
    def put_overlay(device: str, state: overlay.OverlayState) -> Response:
        return change(overlay.apply, device, state)

    @app.delete("/v1/overlays/{device}", status_code=204, dependencies=auth)
    def delete_overlay(device: str) -> Response:
        return change(overlay.remove, device)

    @app.put("/v1/dhcp/{network}", status_code=204, dependencies=auth)
    def put_dhcp(network: str, state: overlay.DhcpState) -> Response:
        return change(overlay.put_dhcp, network, state)

    @app.get("/v1/routers", dependencies=auth)
    def list_routers() -> dict[str, dict[str, Any]]:
        return router.describe()

    @app.put("/v1/routers/{name}", status_code=204, dependencies=auth)
    def put_router(name: str, state: router.RouterState) -> Response:
        return change(router.apply, name, state)

    @app.delete("/v1/routers/{name}", status_code=204, dependencies=auth)
    def delete_router(name: str) -> Response:
        return change(router.remove, name)

    return app
