"""The control plane's side of the host network agent (``nubis.agent``): puts the
overlay state each host should hold, reads what it holds.

A host whose libvirt URI is local (``qemu:///system``) is this machine: its state is
applied in-process, without an agent (it needs no tunnel, having no peer on its
own). A remote host is reached at its agent's URL with its token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from nubis import blocking
from nubis.agent import nwfilter_guard, overlay, router, vlan
from nubis.agent.overlay import AgentError, DhcpState, OverlayState
from nubis.agent.router import Floating, Forward, Leg, RouterState
from nubis.drivers.errors import DriverError, HostUnreachable

TIMEOUT = httpx.Timeout(10.0, connect=3.0)

VlanState = vlan.VlanState
__all__ = [
    "AgentClient",
    "AgentRef",
    "DhcpState",
    "Floating",
    "Forward",
    "Leg",
    "OverlayState",
    "RouterState",
    "VlanState",
]


@dataclass(frozen=True)
class AgentRef:
    """Where a host's agent listens and the token it wants; ``url`` None: this machine."""

    url: str | None
    token: str | None = None


class AgentClient:
    def put_overlay(self, agent: AgentRef, device: str, state: OverlayState) -> None:
        if agent.url is None:
            self._local(overlay.apply, device, state)
            return
        self._call(agent, "PUT", f"/v1/overlays/{device}", json=state.model_dump())

    def remove_overlay(self, agent: AgentRef, device: str) -> None:
        if agent.url is None:
            self._local(overlay.remove, device)
            return
        self._call(agent, "DELETE", f"/v1/overlays/{device}")

    def overlays(self, agent: AgentRef) -> dict[str, dict[str, Any]]:
        result: dict[str, dict[str, Any]] = (
            self._local(overlay.describe)
            if agent.url is None
            else self._call(agent, "GET", "/v1/overlays")
        )
        return result

    def vlan_support(self, agent: AgentRef) -> str | None:
        """None when the host's kernel carries VLANs; else why not."""
        if agent.url is None:
            reason: str | None = self._local(vlan.support)
            return reason
        found = self._call(agent, "GET", "/v1/capabilities")
        return None if found.get("vlan") else str(found.get("vlan_reason") or vlan.NO_VLAN)

    def guard_filters(self, agent: AgentRef) -> None:
        """Keep the host's packet filters in force while libvirt rebuilds them."""
        if agent.url is None:
            self._local(nwfilter_guard.ensure)
            return
        self._call(agent, "PUT", "/v1/nwfilter-guard")

    def put_vlan(self, agent: AgentRef, device: str, state: vlan.VlanState) -> None:
        if agent.url is None:
            self._local(vlan.apply, device, state)
            return
        self._call(agent, "PUT", f"/v1/vlans/{device}", json=state.model_dump())

    def remove_vlan(self, agent: AgentRef, device: str, bridge: str) -> None:
        if agent.url is None:
            self._local(vlan.remove, device, bridge)
            return
        self._call(agent, "DELETE", f"/v1/vlans/{device}", params={"bridge": bridge})

    def put_dhcp(self, agent: AgentRef, network: str, state: DhcpState) -> None:
        if agent.url is None:
            self._local(overlay.put_dhcp, network, state)
            return
        self._call(agent, "PUT", f"/v1/dhcp/{network}", json=state.model_dump())

    def put_router(self, agent: AgentRef, name: str, state: RouterState) -> None:
        if agent.url is None:
            self._local(router.apply, name, state)
            return
        self._call(agent, "PUT", f"/v1/routers/{name}", json=state.model_dump())

    def remove_router(self, agent: AgentRef, name: str) -> None:
        if agent.url is None:
            self._local(router.remove, name)
            return
        self._call(agent, "DELETE", f"/v1/routers/{name}")

    def routers(self, agent: AgentRef) -> dict[str, dict[str, Any]]:
        result: dict[str, dict[str, Any]] = (
            self._local(router.describe)
            if agent.url is None
            else self._call(agent, "GET", "/v1/routers")
        )
        return result

    @staticmethod
    def _local(fn: Any, *args: Any) -> Any:
        blocking.check("host network change")
        try:
            return fn(*args)
        except AgentError as exc:
            raise DriverError(str(exc)) from exc

    @staticmethod
    def _call(agent: AgentRef, method: str, path: str, **kwargs: Any) -> Any:
        blocking.check("network agent call")
        headers = {"Authorization": f"Bearer {agent.token or ''}"}
        try:
            with httpx.Client(base_url=agent.url or "", timeout=TIMEOUT) as http:
                resp = http.request(method, path, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            raise HostUnreachable(f"network agent at {agent.url}: {exc}") from exc
        if resp.status_code >= 400:
            try:
                detail = resp.json().get("detail", resp.text)
            except ValueError:
                detail = resp.text
            raise DriverError(f"network agent at {agent.url}: {detail}")
        return resp.json() if resp.content else None
