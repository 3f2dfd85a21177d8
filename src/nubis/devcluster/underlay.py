"""The devcluster's underlay: each host's own network stack, joined to one bridge.

Host ``dev-<i>`` of a devcluster with address offset ``o`` lives in the network
namespace ``nubisdev<o>-<i>``. A veth pair joins it to the bridge ``nubisul<o>`` in
this (the control plane's) namespace: ``eth0`` inside, at ``172.30.<o>.(10+i)``; the
bridge has ``172.30.<o>.1``. Everything a host listens on (libvirt's TCP port, QEMU's
migration and VNC ports) is reachable from here at the host's address, and the
hosts reach each other the same way: the VXLAN tunnels of overlay networks run
between these addresses, as they would between the NICs of real servers.

A second segment stands for the world outside the cluster (the "external"
network): the bridge ``nubisex<o>`` here, without an address, and in each host a
bridge ``brex`` (``EXTERNAL_BRIDGE``) holding the host's end ``ext0`` of a second
veth pair. An external network is defined on ``brex``; a test reaches the routers'
external addresses from a namespace of its own plugged into ``nubisex<o>``.

Deleting the namespace removes the hosts' ends of the veth pairs and with them the
other ends: a killed host leaves no link behind.
"""

from __future__ import annotations

import subprocess
import time

PREFIX = "172.30"
EXTERNAL_BRIDGE = "brex"


class UnderlayError(RuntimeError):
    pass


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise UnderlayError(f"ip {' '.join(args)}: {proc.stderr.strip()}")
    return proc


def bridge_name(offset: int) -> str:
    return f"nubisul{offset}"


def bridge_address(offset: int) -> str:
    return f"{PREFIX}.{offset}.1"


def external_bridge_name(offset: int) -> str:
    return f"nubisex{offset}"


def external_veth_name(offset: int, index: int) -> str:
    return f"nubisx{offset}-{index}"


def host_address(offset: int, index: int) -> str:
    return f"{PREFIX}.{offset}.{10 + index}"


def netns_name(offset: int, index: int) -> str:
    return f"nubisdev{offset}-{index}"


def veth_name(offset: int, index: int) -> str:
    return f"nubisv{offset}-{index}"


def exists(link: str) -> bool:
    return _ip("link", "show", "dev", link, check=False).returncode == 0


def ensure_bridge(offset: int) -> None:
    """The underlay bridge with the control plane's address on it (idempotent)."""
    bridge = bridge_name(offset)
    for name in (bridge, external_bridge_name(offset)):
        if not exists(name):
            _ip("link", "add", name, "type", "bridge")
        _ip("link", "set", name, "up")
    _ip("addr", "replace", f"{bridge_address(offset)}/24", "dev", bridge)


def remove_bridge(offset: int) -> None:
    for name in (bridge_name(offset), external_bridge_name(offset)):
        if exists(name):
            _ip("link", "del", name)


def host_mac(offset: int, index: int) -> str:
    """The host's ``eth0`` MAC: the same at every start, so the neighbours' ARP caches
    stay true when a killed host comes back."""
    return f"02:de:42:{offset:02x}:{index >> 8:02x}:{index & 0xFF:02x}"


def netns_exists(name: str) -> bool:
    return name in _ip("netns", "list").stdout.split()


def plug(offset: int, index: int) -> None:
    """A fresh namespace for the host, joined to the underlay (an old one is removed
    first: whatever a dead host left there is gone)."""
    ns, veth = netns_name(offset, index), veth_name(offset, index)
    unplug(offset, index)
    ensure_bridge(offset)
    _ip("netns", "add", ns)
    _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
    _ip("-n", ns, "link", "set", "eth0", "address", host_mac(offset, index))
    _ip("link", "set", veth, "master", bridge_name(offset), "up")
    _ip("-n", ns, "link", "set", "lo", "up")
    _ip("-n", ns, "addr", "add", f"{host_address(offset, index)}/24", "dev", "eth0")
    _ip("-n", ns, "link", "set", "eth0", "up")
    ext = external_veth_name(offset, index)
    _ip("link", "add", ext, "type", "veth", "peer", "name", "ext0", "netns", ns)
    _ip("link", "set", ext, "master", external_bridge_name(offset), "up")
    _ip("-n", ns, "link", "add", EXTERNAL_BRIDGE, "type", "bridge")
    _ip("-n", ns, "link", "set", "ext0", "master", EXTERNAL_BRIDGE, "up")
    _ip("-n", ns, "link", "set", EXTERNAL_BRIDGE, "up")


def unplug(offset: int, index: int, timeout: float = 10) -> None:
    """The host's namespace and its link go (its processes must be gone already).

    The kernel tears a deleted namespace down in the background, and its veth pair
    with it: the link may vanish between a look and a delete, and is waited for, so
    that a host started again at once can make its link under the same name."""
    ns = netns_name(offset, index)
    if netns_exists(ns):
        _ip("netns", "del", ns)
    deadline = time.monotonic() + timeout
    for veth in (veth_name(offset, index), external_veth_name(offset, index)):
        while exists(veth):
            _ip("link", "del", veth, check=False)  # gone meanwhile: what we wanted
            if time.monotonic() > deadline:
                raise UnderlayError(f"link {veth} is still there after {timeout:.0f} s")
            time.sleep(0.05)


def in_netns(offset: int, index: int, argv: list[str]) -> list[str]:
    """``argv`` run inside the host's network namespace."""
    return ["ip", "netns", "exec", netns_name(offset, index), *argv]
