"""A host's part of a VLAN provider network: an 802.1Q device on one of the host's
interfaces, joined to the network's bridge (which libvirt's network then uses).

``plan`` says which iproute2 commands bring a host from what it has to what the
state wants (pure: unit-tested without a kernel that has 802.1Q); ``apply`` runs
them. ``support`` answers whether this kernel can make VLAN devices at all, by
making one in a throwaway network namespace.
"""

from __future__ import annotations

import re
import subprocess
import uuid
from typing import Any

from pydantic import BaseModel, Field

from nubis.agent.overlay import BRIDGE_RE, AgentError, link, run

DEVICE_RE = re.compile(r"^nvl-[0-9a-f]{8}$")
NO_VLAN = "its kernel has no 802.1Q VLAN support (module 8021q)"


class VlanState(BaseModel):
    """What one host holds of one VLAN network."""

    interface: str = Field(pattern=BRIDGE_RE.pattern)  # the host NIC carrying the VLANs
    vid: int = Field(ge=1, le=4094)
    bridge: str = Field(pattern=BRIDGE_RE.pattern)


def plan(device: str, state: VlanState, have: dict[str, dict[str, Any] | None]) -> list[list[str]]:
    """The commands that make ``device`` (VLAN ``vid`` on ``interface``) a port of
    ``bridge``; ``have`` holds the links as ``ip -d -j link show`` reads them (None:
    absent)."""
    if not DEVICE_RE.match(device):
        raise AgentError(f"not a VLAN device name: {device!r}")
    if have.get(state.interface) is None:
        raise AgentError(f"interface {state.interface} does not exist on this host")
    commands: list[list[str]] = []
    if have.get(state.bridge) is None:
        commands.append(["ip", "link", "add", state.bridge, "type", "bridge", "stp_state", "0"])
    current = have.get(device)
    info = (current or {}).get("linkinfo", {})
    data = info.get("info_data", {})
    matches = (
        current is not None
        and info.get("info_kind") == "vlan"
        and data.get("id") == state.vid
        and current.get("link") == state.interface
    )
    if current is not None and not matches:
        commands.append(["ip", "link", "del", "dev", device])
    if not matches:
        commands.append(
            ["ip", "link", "add", "link", state.interface, "name", device]
            + ["type", "vlan", "id", str(state.vid)]
        )
    commands.append(["ip", "link", "set", "dev", device, "master", state.bridge, "up"])
    commands.append(["ip", "link", "set", "dev", state.bridge, "up"])
    return commands


def apply(device: str, state: VlanState) -> None:
    if support() is not None:
        raise AgentError(f"this host cannot carry VLAN networks: {NO_VLAN}")
    have = {name: link(name) for name in (state.interface, state.bridge, device)}
    for command in plan(device, state, have):
        run(*command)


def remove(device: str, bridge: str) -> None:
    """The VLAN device and the bridge Nubis made for it go (absent: nothing to do)."""
    if not DEVICE_RE.match(device) or not BRIDGE_RE.match(bridge):
        raise AgentError(f"not a VLAN device name: {device!r}")
    for name in (device, bridge):
        if link(name) is not None:
            run("ip", "link", "del", "dev", name)


def support() -> str | None:
    """None when this kernel makes 802.1Q devices; else why not."""
    ns = f"nubis-probe-{uuid.uuid4().hex[:8]}"
    try:
        run("ip", "netns", "add", ns)
        run("ip", "-n", ns, "link", "add", "probe0", "type", "veth", "peer", "probe1")
        made = subprocess.run(
            ["ip", "-n", ns, "link", "add", "link", "probe0", "name", "probe0.2"]
            + ["type", "vlan", "id", "2"],
            capture_output=True,
            text=True,
        )
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    return None if made.returncode == 0 else NO_VLAN
