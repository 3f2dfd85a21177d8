"""Guest-to-guest throughput and round-trip time over an overlay network: between two
"guests" on one host (through the host's bridge) and between guests on two hosts
(bridge, VXLAN device made by Nubis's agent code, the underlay, and back), in the
same run, with the ratio.

Everything is made in network namespaces of this machine (removed at the end): two
hosts joined by an underlay bridge, as the devcluster's are; on each a bridge with
the overlay MTU and the VXLAN device ``nubis.agent.overlay.apply`` makes, with the
control plane's forwarding entries; three guests (veth pairs, MTU 1450 like the
guests' taps): g1 and g2 on host 1, g3 on host 2. A transfer is one TCP stream of
1 GiB (the best of three), a round trip a UDP echo (the median of 2,000); same-host
and cross-host measurements alternate for five rounds (this machine's two cores
make single runs noisy), and the medians of the rounds are compared.

    sudo .venv/bin/python bench/overlay.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

from nubis.agent.overlay import OverlayState
from nubis.services.network.specs import MTU

UNDERLAY = "nbo-ul"
HOSTS = {"nbo-h1": "172.31.250.1", "nbo-h2": "172.31.250.2"}
GUESTS = {  # guest -> (host, address, MAC)
    "nbo-g1": ("nbo-h1", "10.250.0.11", "52:54:00:be:00:11"),
    "nbo-g2": ("nbo-h1", "10.250.0.12", "52:54:00:be:00:12"),
    "nbo-g3": ("nbo-h2", "10.250.0.13", "52:54:00:be:00:13"),
}
BRIDGE, DEVICE, VNI, GATEWAY_MAC = "nbo-br", "nvx-00be0c00", 4242, "0e:00:00:be:0c:00"

SERVER = r"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 5201)); s.listen(1)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", 5202))
print("ready", flush=True)
for _ in range(3):
    c, _a = s.accept()
    while c.recv(1 << 20):
        pass
    c.close()
while True:
    data, peer = u.recvfrom(64)
    if data == b"stop":
        break
    u.sendto(data, peer)
"""

CLIENT = r"""
import json, socket, statistics, sys, time
target, size = sys.argv[1], int(sys.argv[2])
buf = b"x" * (1 << 20)
rates = []
for _ in range(3):
    c = socket.create_connection((target, 5201))
    start = time.perf_counter(); sent = 0
    while sent < size:
        c.sendall(buf); sent += len(buf)
    c.shutdown(socket.SHUT_WR); c.recv(1); c.close()
    rates.append(sent * 8 / (time.perf_counter() - start) / 1e9)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(2)
rtts = []
for i in range(2000):
    t = time.perf_counter(); u.sendto(b"ping", (target, 5202)); u.recvfrom(64)
    rtts.append((time.perf_counter() - t) * 1e6)
u.sendto(b"stop", (target, 5202))
print(json.dumps({"gbit_s": max(rates), "rtt_us": statistics.median(rtts)}))
"""


def sh(*argv: str) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)}: {proc.stderr.strip()}")
    return proc.stdout


def in_ns(ns: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


def teardown() -> None:
    for ns in [*GUESTS, *HOSTS, UNDERLAY]:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def build() -> None:
    teardown()
    for ns in [UNDERLAY, *HOSTS, *GUESTS]:
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
    sh("ip", "-n", UNDERLAY, "link", "add", "br0", "type", "bridge")
    sh("ip", "-n", UNDERLAY, "link", "set", "br0", "up")
    for i, (host, address) in enumerate(HOSTS.items()):
        sh(
            "ip",
            "-n",
            UNDERLAY,
            "link",
            "add",
            f"ul{i}",
            "type",
            "veth",
            "peer",
            "eth0",
            "netns",
            host,
        )
        sh("ip", "-n", UNDERLAY, "link", "set", f"ul{i}", "master", "br0", "up")
        sh("ip", "-n", host, "addr", "add", f"{address}/24", "dev", "eth0")
        sh("ip", "-n", host, "link", "set", "eth0", "up")
        sh(
            "ip",
            "-n",
            host,
            "link",
            "add",
            BRIDGE,
            "mtu",
            str(MTU),
            "type",
            "bridge",
            "stp_state",
            "0",
        )
        sh("ip", "-n", host, "link", "set", BRIDGE, "up")
    for i, (guest, (host, address, mac)) in enumerate(GUESTS.items()):
        tap = f"tap{i}"
        sh(
            "ip",
            "-n",
            host,
            "link",
            "add",
            tap,
            "mtu",
            str(MTU),
            "type",
            "veth",
            "peer",
            "eth0",
            "netns",
            guest,
        )
        sh("ip", "-n", host, "link", "set", tap, "master", BRIDGE, "up")
        sh("ip", "-n", guest, "link", "set", "eth0", "address", mac, "mtu", str(MTU), "up")
        sh("ip", "-n", guest, "addr", "add", f"{address}/24", "dev", "eth0")
    fdb = {mac: HOSTS[host] for host, _a, mac in GUESTS.values()}
    for host, address in HOSTS.items():
        state = OverlayState(
            vni=VNI,
            bridge=BRIDGE,
            mac=GATEWAY_MAC,
            mtu=MTU,
            local=address,
            peers=[a for h, a in HOSTS.items() if h != host],
            fdb=fdb,
        )
        # the agent's own code, run inside the host's network namespace
        code = (
            "import json,sys; from nubis.agent.overlay import OverlayState, apply; "
            f"apply({DEVICE!r}, OverlayState(**json.loads(sys.argv[1])))"
        )
        sh(*in_ns(host, sys.executable, "-c", code, json.dumps(state.model_dump())))


def measure(source: str, target: str, size: int) -> dict[str, float]:
    server = subprocess.Popen(
        in_ns(target, sys.executable, "-c", SERVER), stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        out = sh(*in_ns(source, sys.executable, "-c", CLIENT, GUESTS[target][1], str(size)))
        return json.loads(out)
    finally:
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=1024, help="bytes per transfer, in MiB")
    parser.add_argument("--rounds", type=int, default=5, help="same/cross pairs measured")
    args = parser.parse_args()
    build()
    rounds: dict[str, list[dict[str, float]]] = {"same": [], "cross": []}
    try:
        time.sleep(1)
        for _ in range(args.rounds):
            rounds["same"].append(measure("nbo-g1", "nbo-g2", args.mib << 20))
            rounds["cross"].append(measure("nbo-g1", "nbo-g3", args.mib << 20))
    finally:
        teardown()
    same, cross = (
        {key: statistics.median(r[key] for r in rounds[path]) for key in ("gbit_s", "rtt_us")}
        for path in ("same", "cross")
    )
    print(f"medians of {args.rounds} rounds")
    print(f"{'path':<34}{'throughput':>14}{'round trip':>14}")
    for label, got in (("same host (bridge)", same), ("across hosts (bridge+VXLAN)", cross)):
        print(f"{label:<34}{got['gbit_s']:>9.2f} Gb/s{got['rtt_us']:>11.0f} us")
    ratio = cross["gbit_s"] / same["gbit_s"]
    print(f"cross-host / same-host throughput: {ratio:.0%} (target: at least 70%)")
    print(f"cross-host / same-host round trip: {cross['rtt_us'] / same['rtt_us']:.2f}x")


if __name__ == "__main__":
    main()
