"""Attack: a guest runs its own DHCP server (busybox udhcpd), its security group
opened to DHCP requests, to hand its neighbours another gateway. No DHCP server
packet of it reaches the victim (read on the host side of the victim's tap), and
the victim's lease is the address Nubis reserved, from the network's own dnsmasq.
(Without the port filter's rule against DHCP answers from guests, the victim's
tap received one offer from the rogue per request.)

Everything happens on a network of this machine's libvirt; the packets are read
with raw sockets on the guests' tap devices."""

from __future__ import annotations

import re
import socket
import struct
import threading
import xml.etree.ElementTree as ET

import libvirt
import pytest

from tests.integration.guest import guest_run

pytestmark = pytest.mark.integration
CIDR = "10.236.0.0/24"
GATEWAY = "10.236.0.1"
ETH_P_ALL = 0x0003


class DhcpServerReplies:
    """Counts DHCP server packets (UDP 67 -> 68) sent by ``mac`` on a tap device."""

    def __init__(self, tap: str, mac: str) -> None:
        self.mac = bytes.fromhex(mac.replace(":", ""))
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.bind((tap, 0))
        self.sock.settimeout(0.2)
        self.count = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                frame = self.sock.recv(2048)
            except TimeoutError:
                continue
            if len(frame) < 42 or frame[6:12] != self.mac or frame[12:14] != b"\x08\x00":
                continue
            ihl = (frame[14] & 0x0F) * 4
            if frame[23] != 17:  # UDP
                continue
            sport, dport = struct.unpack_from("!HH", frame, 14 + ihl)
            if (sport, dport) == (67, 68):
                self.count += 1

    def close(self) -> int:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()
        return self.count


def tap_of(instance_id: str) -> str:
    conn = libvirt.open("qemu:///system")
    try:
        xml = conn.lookupByUUIDString(instance_id).XMLDesc(0)
    finally:
        conn.close()
    return ET.fromstring(xml).find("./devices/interface/target").get("dev")


def boot(server, name: str, groups: list[str] | None = None) -> dict:
    resp = server.client.post(
        "/instances",
        json={
            "name": name,
            "image": "nubis-tiny",
            "flavor": "m1.tiny",
            "networks": [{"network": "dhcp-fight", "security_groups": groups}],
        },
    )
    assert resp.status_code == 202, resp.text
    inst = resp.json()
    assert server.wait_task(inst["task_id"])["status"] == "succeeded"
    server.wait_console(inst["id"])
    return inst


UDHCPD_CONF = (
    "start 10.236.0.200\\nend 10.236.0.210\\ninterface eth0\\n"
    "lease_file /tmp/rogue.leases\\noption subnet 255.255.255.0\\n"
    "option router 10.236.0.66\\noption dns 10.236.0.66\\n"
)


def test_a_guest_answering_dhcp_reaches_no_neighbour(server):
    resp = server.client.post(
        "/networks", json={"name": "dhcp-fight", "mode": "nat", "subnets": [{"cidr": CIDR}]}
    )
    assert resp.status_code == 201, resp.text
    # the tenant lets DHCP requests into its rogue guest (its own security group)
    group = server.client.post("/security-groups", json={"name": "rogue-dhcp"}).json()
    rule = {"protocol": "udp", "port_min": 67, "remote_cidr": "0.0.0.0/0"}
    assert server.client.post(f"/security-groups/{group['id']}/rules", json=rule).is_success
    rogue = boot(server, "rogue", ["default", "rogue-dhcp"])
    victim = boot(server, "victim")
    try:
        port = {
            i["id"]: server.client.get(f"/instances/{i['id']}/ports").json()[0]
            for i in (rogue, victim)
        }
        into_victim = DhcpServerReplies(tap_of(victim["id"]), port[rogue["id"]]["mac"])
        started = guest_run(
            server,
            rogue["id"],
            f"printf '{UDHCPD_CONF}' > /tmp/u.conf && touch /tmp/rogue.leases && "
            "(udhcpd -f /tmp/u.conf > /tmp/udhcpd.log 2>&1 &) && sleep 1 && "
            "pidof udhcpd > /dev/null && echo ROGUE-UP",
        )
        assert "ROGUE-UP" in started, started
        leases = []
        for _ in range(3):  # the victim asks again and again
            got = guest_run(
                server,
                victim["id"],
                "udhcpc -i eth0 -n -q -t 4 -T 1 -s /bin/true 2>&1 | grep obtained",
                timeout=90,
            )
            leases += re.findall(r"lease of (\S+) obtained from (\S+),", got)
        received = into_victim.close()
        still = guest_run(server, rogue["id"], "pidof udhcpd > /dev/null && echo ROGUE-UP")
        assert "ROGUE-UP" in still  # the rogue server ran the whole time
        # nothing it sent reached the victim (without the port filter's drop rule the
        # victim's tap got one offer of it per ask), and every lease the victim got
        # is its reserved address, from the network's own dnsmasq
        assert received == 0
        assert leases and set(leases) == {(port[victim["id"]]["ip"], GATEWAY)}, leases
    finally:
        for inst in (rogue, victim):
            done = server.client.delete(f"/instances/{inst['id']}")
            assert server.wait_task(done.json()["task_id"])["status"] == "succeeded"
        assert server.client.delete("/networks/dhcp-fight").status_code == 204
        assert server.client.delete(f"/security-groups/{group['id']}").status_code == 204
