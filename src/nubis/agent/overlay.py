"""A host's part of an overlay network: a VXLAN device on the network's bridge.

libvirt makes the bridge (and the DHCP server on it); this module joins a VXLAN
device to it and keeps the device's forwarding table to what the control plane
says. There is no multicast and no learning over the tunnel: frames for a MAC the
table names go to that MAC's host; broadcast and unknown frames go to every other
host of the network (one ``00:00:00:00:00:00`` entry per peer, head-end
replication). Applying a state twice changes nothing; applying a new one adds
what is missing and removes what is no longer wanted.

Every command is iproute2's (``ip``, ``bridge``), read back with ``-json``.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, field_validator

VXLAN_PORT = 4789
FLOOD = "00:00:00:00:00:00"
DEVICE_RE = re.compile(r"^nvx-[0-9a-f]{8}$")
BRIDGE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
NETWORK_RE = re.compile(r"^nubis-net-[0-9a-f]{8}$")
# the DHCP options the network's dnsmasq reads at start and on SIGHUP
# (``dhcp-optsfile``, in the network's libvirt definition)
DHCP_OPTS_DIR = Path("/var/lib/libvirt/nubis/dhcp")
DNSMASQ_PIDS = Path("/run/libvirt/network")


class AgentError(RuntimeError):
    """The host refused a change; the message says why."""


def _ipv4(value: str) -> str:
    return str(ipaddress.IPv4Address(value))


class OverlayState(BaseModel):
    """What one host holds of one overlay network."""

    vni: int = Field(ge=1, le=2**24 - 1)
    bridge: str = Field(pattern=BRIDGE_RE.pattern)
    # the network's gateway MAC: the same on every host's bridge (a distributed gateway)
    mac: str = Field(pattern=MAC_RE.pattern)
    mtu: int = Field(ge=576, le=9000)
    local: str  # this host's underlay address, the tunnels' source
    peers: list[str] = Field(default_factory=list, max_length=1000)  # the other hosts
    fdb: dict[str, str] = Field(default_factory=dict, max_length=100_000)  # MAC -> host

    @field_validator("local")
    @classmethod
    def _local(cls, value: str) -> str:
        return _ipv4(value)

    @field_validator("peers")
    @classmethod
    def _peers(cls, value: list[str]) -> list[str]:
        return sorted({_ipv4(v) for v in value})

    @field_validator("fdb")
    @classmethod
    def _fdb(cls, value: dict[str, str]) -> dict[str, str]:
        out = {}
        for mac, where in value.items():
            if not MAC_RE.match(mac.lower()) or mac == FLOOD:
                raise ValueError(f"not a unicast MAC: {mac!r}")
            out[mac.lower()] = _ipv4(where)
        return out


def run(*argv: str) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AgentError(f"{' '.join(argv)}: {proc.stderr.strip()}")
    return proc.stdout


def link(name: str) -> dict[str, Any] | None:
    proc = subprocess.run(["ip", "-d", "-j", "link", "show", "dev", name], capture_output=True)
    if proc.returncode != 0:
        return None
    found = json.loads(proc.stdout)
    return found[0] if found else None


def _fdb(device: str) -> set[tuple[str, str]]:
    """(mac, dst) of the device's own forwarding entries (not the bridge's learned)."""
    entries = json.loads(run("bridge", "-j", "fdb", "show", "dev", device) or "[]")
    return {(e["mac"], e["dst"]) for e in entries if "dst" in e and "self" in e.get("flags", [])}


def _wanted(state: OverlayState) -> set[tuple[str, str]]:
    return {(FLOOD, p) for p in state.peers if p != state.local} | {
        (mac, where) for mac, where in state.fdb.items() if where != state.local
    }


def _matches(link: dict[str, Any], state: OverlayState) -> bool:
    data = link.get("linkinfo", {}).get("info_data", {})
    return (
        link.get("linkinfo", {}).get("info_kind") == "vxlan"
        and data.get("id") == state.vni
        and data.get("local") == state.local
        and data.get("port") == VXLAN_PORT
        and data.get("learning") is False
    )


def apply(device: str, state: OverlayState) -> None:
    """Make the host hold ``state`` for the overlay device ``device`` (idempotent)."""
    if not DEVICE_RE.match(device):
        raise AgentError(f"not an overlay device name: {device!r}")
    bridge = link(state.bridge)
    if bridge is None:
        raise AgentError(f"bridge {state.bridge} does not exist on this host")
    if bridge.get("address") != state.mac:
        run("ip", "link", "set", "dev", state.bridge, "address", state.mac)
    current = link(device)
    if current is not None and not _matches(current, state):
        run("ip", "link", "del", "dev", device)
        current = None
    if current is None:
        run(
            "ip", "link", "add", device, "type", "vxlan", "id", str(state.vni),
            "local", state.local, "dstport", str(VXLAN_PORT), "nolearning",
        )  # fmt: skip
    run("ip", "link", "set", "dev", device, "mtu", str(state.mtu))
    run("ip", "link", "set", "dev", device, "master", state.bridge, "up")
    have, want = _fdb(device), _wanted(state)
    for mac, where in sorted(have - want):
        run("bridge", "fdb", "del", mac, "dev", device, "dst", where)
    for mac, where in sorted(want - have):
        verb = "append" if mac == FLOOD else "replace"
        run("bridge", "fdb", verb, mac, "dev", device, "dst", where)


def dhcp_opts_file(network: str) -> Path:
    return DHCP_OPTS_DIR / f"{network}.opts"


class DhcpState(BaseModel):
    """The router the network's DHCP hands out as the default gateway (None: none)."""

    router: str | None = None

    @field_validator("router")
    @classmethod
    def _router(cls, value: str | None) -> str | None:
        return None if value is None else _ipv4(value)


def put_dhcp(network: str, state: DhcpState) -> None:
    """The network's dnsmasq hands out ``state.router`` as the default gateway; a
    change is written and dnsmasq told to read it again."""
    if not NETWORK_RE.match(network):
        raise AgentError(f"not a network name: {network!r}")
    router = state.router
    path = dhcp_opts_file(network)
    text = f"option:router,{router}\n" if router else ""
    if (path.read_text() if path.exists() else "") == text:
        return
    DHCP_OPTS_DIR.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.chmod(0o644)  # dnsmasq reads it again as its own unprivileged user
    tmp.replace(path)
    pidfile = DNSMASQ_PIDS / f"{network}.pid"
    try:
        os.kill(int(pidfile.read_text().strip()), signal.SIGHUP)
    except (OSError, ValueError):
        pass  # not running: it reads the file when libvirt starts it


def remove(device: str) -> None:
    """The overlay device goes (its forwarding table with it); absent: nothing to do."""
    if not DEVICE_RE.match(device):
        raise AgentError(f"not an overlay device name: {device!r}")
    if link(device) is not None:
        run("ip", "link", "del", "dev", device)


def describe() -> dict[str, dict[str, Any]]:
    """Every overlay device of the host: its VNI, bridge and forwarding entries."""
    links = json.loads(run("ip", "-d", "-j", "link", "show", "type", "vxlan") or "[]")
    out: dict[str, dict[str, Any]] = {}
    for link in links:
        name = link.get("ifname", "")
        if not DEVICE_RE.match(name):
            continue
        data = link.get("linkinfo", {}).get("info_data", {})
        entries = sorted(_fdb(name))
        out[name] = {
            "vni": data.get("id"),
            "local": data.get("local"),
            "bridge": link.get("master"),
            "mtu": link.get("mtu"),
            "peers": [dst for mac, dst in entries if mac == FLOOD],
            "fdb": {mac: dst for mac, dst in entries if mac != FLOOD},
        }
    return out
