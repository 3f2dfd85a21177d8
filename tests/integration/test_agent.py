"""The host network agent on a real kernel: started in a network namespace of its own
(a host's stack), it refuses callers without its token and bad states, makes the
VXLAN device on the network's bridge with the forwarding entries it is given,
changes only what differs when given a new state, and removes it; it keeps its guard
of libvirt's packet filters in place."""

from __future__ import annotations

import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

pytestmark = pytest.mark.integration

NS = "nubis-agent-test"
ADDRESS = "172.31.251.1"
DEVICE = "nvx-0a0b0c0d"


def ns(*argv: str) -> str:
    proc = subprocess.run(["ip", "netns", "exec", NS, *argv], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def agent(tmp_path_factory) -> Iterator[httpx.Client]:
    """The agent in a namespace joined to this one by a veth pair (its "eth0")."""
    subprocess.run(["ip", "netns", "del", NS], capture_output=True)
    subprocess.run(["ip", "link", "del", "nbat0"], capture_output=True)
    subprocess.run(["ip", "netns", "add", NS], check=True)
    subprocess.run(
        ["ip", "link", "add", "nbat0", "type", "veth", "peer", "eth0", "netns", NS], check=True
    )
    subprocess.run(["ip", "addr", "add", "172.31.251.254/24", "dev", "nbat0"], check=True)
    subprocess.run(["ip", "link", "set", "nbat0", "up"], check=True)
    ns("ip", "link", "set", "lo", "up")
    ns("ip", "addr", "add", f"{ADDRESS}/24", "dev", "eth0")
    ns("ip", "link", "set", "eth0", "up")
    ns("ip", "link", "add", "nbr-test", "type", "bridge")
    token = secrets.token_urlsafe(24)
    token_file = tmp_path_factory.mktemp("agent") / "token"
    token_file.write_text(token)
    proc = subprocess.Popen(
        ["ip", "netns", "exec", NS, sys.executable, "-m", "nubis.agent"]
        + ["--listen", ADDRESS, "--token-file", str(token_file)]
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection((ADDRESS, 16600), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.2)
        with httpx.Client(
            base_url=f"http://{ADDRESS}:16600",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        ) as http:
            yield http
    finally:
        proc.kill()
        proc.wait()
        subprocess.run(["ip", "link", "del", "nbat0"], capture_output=True)
        subprocess.run(["ip", "netns", "del", NS], capture_output=True)


def state(**changes) -> dict:
    base = {
        "vni": 5000,
        "bridge": "nbr-test",
        "mac": "0e:00:0a:0b:0c:0d",
        "mtu": 1450,
        "local": ADDRESS,
        "peers": ["172.31.251.2", "172.31.251.3"],
        "fdb": {"52:54:00:00:00:02": "172.31.251.2", "52:54:00:00:00:03": "172.31.251.3"},
    }
    return {**base, **changes}


def fdb() -> set[tuple[str, str]]:
    out = set()
    for line in ns("bridge", "fdb", "show", "dev", DEVICE).splitlines():
        words = line.split()
        if "dst" in words and "self" in words:
            out.add((words[0], words[words.index("dst") + 1]))
    return out


def test_agent_keeps_the_overlay_device(agent: httpx.Client):
    assert httpx.get(f"{agent.base_url}/v1/overlays", timeout=10).status_code == 401
    wrong = httpx.get(
        f"{agent.base_url}/v1/overlays", headers={"Authorization": "Bearer nope"}, timeout=10
    )
    assert wrong.status_code == 401

    # bad input: refused, nothing made
    for bad in (
        state(vni=0),
        state(mac="not-a-mac"),
        state(local="10.0.0.300"),
        state(fdb={"00:00:00:00:00:00": "172.31.251.2"}),
        state(bridge="x; rm -rf /"),
    ):
        assert agent.put(f"/v1/overlays/{DEVICE}", json=bad).status_code == 422, bad
    assert agent.put("/v1/overlays/eth0", json=state()).status_code == 409
    missing = agent.put(f"/v1/overlays/{DEVICE}", json=state(bridge="nbr-none"))
    assert missing.status_code == 409 and "does not exist" in missing.json()["detail"]
    assert agent.get("/v1/overlays").json() == {}

    assert agent.put(f"/v1/overlays/{DEVICE}", json=state()).status_code == 204
    held = agent.get("/v1/overlays").json()[DEVICE]
    assert held["vni"] == 5000 and held["bridge"] == "nbr-test" and held["mtu"] == 1450
    assert fdb() == {
        ("00:00:00:00:00:00", "172.31.251.2"),
        ("00:00:00:00:00:00", "172.31.251.3"),
        ("52:54:00:00:00:02", "172.31.251.2"),
        ("52:54:00:00:00:03", "172.31.251.3"),
    }
    assert "0e:00:0a:0b:0c:0d" in ns("ip", "link", "show", "nbr-test")  # the gateway MAC

    # a guest moved to host .2, host .3 left: only the difference changes
    moved = state(
        peers=["172.31.251.2"],
        fdb={"52:54:00:00:00:02": "172.31.251.2", "52:54:00:00:00:03": "172.31.251.2"},
    )
    assert agent.put(f"/v1/overlays/{DEVICE}", json=moved).status_code == 204
    assert fdb() == {
        ("00:00:00:00:00:00", "172.31.251.2"),
        ("52:54:00:00:00:02", "172.31.251.2"),
        ("52:54:00:00:00:03", "172.31.251.2"),
    }
    # a port on this very host needs no entry (the bridge learns it)
    local = state(peers=["172.31.251.2"], fdb={"52:54:00:00:00:09": ADDRESS})
    assert agent.put(f"/v1/overlays/{DEVICE}", json=local).status_code == 204
    assert fdb() == {("00:00:00:00:00:00", "172.31.251.2")}
    # another VNI: the device is made again
    assert agent.put(f"/v1/overlays/{DEVICE}", json=state(vni=6000)).status_code == 204
    assert agent.get("/v1/overlays").json()[DEVICE]["vni"] == 6000

    assert agent.delete(f"/v1/overlays/{DEVICE}").status_code == 204
    assert agent.delete(f"/v1/overlays/{DEVICE}").status_code == 204  # idempotent
    assert agent.get("/v1/overlays").json() == {}


def test_agent_puts_a_router_leg_only_where_its_overlay_is(agent: httpx.Client):
    """A router leg on an overlay network waits for the network's VXLAN device on the
    bridge: a router put before it (a host just back, its networks not yet put again)
    is refused, not left looking ready while it carries nothing."""
    router = "nqr-0a0b0c0d"
    leg = {"host_end": "nri-0a0b0c0d", "bridge": "nbr-test", "address": "10.77.0.1/24",
           "mac": "02:4e:42:00:00:07", "mtu": 1450, "tunnel": DEVICE}  # fmt: skip
    try:
        refused = agent.put(f"/v1/routers/{router}", json={"interfaces": [leg]})
        assert refused.status_code == 409, refused.text
        assert f"overlay {DEVICE} is not on bridge nbr-test" in refused.json()["detail"]
        assert router not in agent.get("/v1/routers").json()
        assert agent.put(f"/v1/overlays/{DEVICE}", json=state()).status_code == 204
        put = agent.put(f"/v1/routers/{router}", json={"interfaces": [leg]})
        assert put.status_code == 204, put.text
        held = agent.get("/v1/routers").json()[router]
        assert held["legs"] == {"qri-0a0b0c0d": ["10.77.0.1/24"]}
    finally:
        assert agent.delete(f"/v1/routers/{router}").status_code == 204
        assert agent.delete(f"/v1/overlays/{DEVICE}").status_code == 204


def filter_rules() -> list[str]:
    return [line for line in ns("iptables-save", "-t", "filter").splitlines() if line[:2] == "-A"]


def test_agent_guards_libvirts_filter_jumps(agent: httpx.Client):
    """The guard goes in before libvirt's network rules; a second put changes
    nothing, libvirt's filter jumps put above it leave it in place, a guard moved down
    (libvirt's network rules inserted above it) goes back up."""
    ns("iptables", "-N", "LIBVIRT_FWX")
    ns("iptables", "-A", "FORWARD", "-j", "LIBVIRT_FWX")
    ns("iptables", "-N", "libvirt-in")
    ns("iptables", "-I", "FORWARD", "1", "-j", "libvirt-in")
    assert agent.put("/v1/nwfilter-guard").status_code == 204
    guard = "-m comment --comment nubis-guard -j"
    wanted = [
        f"-A INPUT {guard} libvirt-host-in",
        f"-A FORWARD {guard} libvirt-in-post",
        "-A FORWARD -j libvirt-in",
        "-A FORWARD -j LIBVIRT_FWX",
        f"-A libvirt-in-post {guard} libvirt-out",
        f"-A libvirt-out {guard} libvirt-in",
    ]
    assert filter_rules() == wanted
    assert agent.put("/v1/nwfilter-guard").status_code == 204
    assert filter_rules() == wanted
    ns("iptables", "-D", "FORWARD", "-j", "libvirt-in")  # libvirt applying a NIC's rules
    ns("iptables", "-I", "FORWARD", "1", "-j", "libvirt-in")
    assert agent.put("/v1/nwfilter-guard").status_code == 204
    assert filter_rules() == [wanted[0], wanted[2], wanted[1], *wanted[3:]]

    ns("iptables", "-I", "FORWARD", "1", "-j", "LIBVIRT_FWX")
    assert agent.put("/v1/nwfilter-guard").status_code == 204
    forward = [rule for rule in filter_rules() if rule.startswith("-A FORWARD")]
    assert forward == [
        f"-A FORWARD {guard} libvirt-in-post",
        "-A FORWARD -j LIBVIRT_FWX",
        "-A FORWARD -j libvirt-in",
        "-A FORWARD -j LIBVIRT_FWX",
    ]
