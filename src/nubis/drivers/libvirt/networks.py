"""The network driver: the libvirt networks Nubis defines on each host of a cluster,
and the DHCP reservations (``<host mac= ip=>``) that give each port its address.

A nat or isolated network is a bridge libvirt makes and a dnsmasq it runs on the
bridge; with reservations only (no ``<range>``) dnsmasq answers the reserved MACs
and nobody else. An overlay network is an isolated one whose bridge has the same
MAC and address on every host (its distributed gateway), no spanning tree (the
hosts' bridges are joined by VXLAN, never in a loop) and the MTU the tunnel leaves
(dnsmasq tells the guests); the VXLAN device is the network agent's
(``nubis.agent.overlay``). A bridged network joins a bridge the host already has; a
vlan network joins the bridge the network agent makes for its 802.1Q device.
Every method is idempotent (define-if-missing, remove-if-present).
"""

from __future__ import annotations

import ipaddress
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import libvirt

from nubis.agent.overlay import dhcp_opts_file
from nubis.drivers.libvirt.base import DriverBase, HostRef
from nubis.keyed_locks import KeyedLocks

MODES = ("overlay", "nat", "isolated", "bridged", "vlan")
DNSMASQ_NS = "http://libvirt.org/schemas/network/dnsmasq/1.0"
ET.register_namespace("dnsmasq", DNSMASQ_NS)


@dataclass(frozen=True)
class Reservation:
    mac: str
    ip: str
    hostname: str | None = None


@dataclass(frozen=True)
class SubnetSpec:
    cidr: str
    gateway: str | None  # the host's address on the bridge (nat and isolated)
    dhcp: bool = True
    reservations: tuple[Reservation, ...] = ()


@dataclass(frozen=True)
class NetworkSpec:
    name: str
    mode: str  # overlay | nat | isolated | bridged | vlan
    bridge: str
    subnets: tuple[SubnetSpec, ...] = ()
    mac: str | None = None  # overlay: the bridge's MAC, the same on every host
    mtu: int | None = None  # overlay: what the tunnel leaves of the underlay's


def _host_el(parent: ET.Element, res: Reservation) -> ET.Element:
    el = ET.SubElement(parent, "host", mac=res.mac, ip=res.ip)
    if res.hostname:
        el.set("name", res.hostname)
    return el


def reservation_xml(res: Reservation) -> str:
    return ET.tostring(_host_el(ET.Element("dhcp"), res), encoding="unicode")


def network_xml(spec: NetworkSpec) -> str:
    if spec.mode not in MODES:
        raise ValueError(f"unknown network mode {spec.mode!r}")
    net = ET.Element("network")
    ET.SubElement(net, "name").text = spec.name
    if spec.mode in ("bridged", "vlan"):  # vlan: the bridge the network agent makes
        ET.SubElement(net, "forward", mode="bridge")
        ET.SubElement(net, "bridge", name=spec.bridge)
        return ET.tostring(net, encoding="unicode")
    if spec.mode == "nat":
        ET.SubElement(net, "forward", mode="nat")
    stp = "off" if spec.mode == "overlay" else "on"
    ET.SubElement(net, "bridge", name=spec.bridge, stp=stp, delay="0")
    if spec.mac:
        ET.SubElement(net, "mac", address=spec.mac)
    if spec.mtu:
        ET.SubElement(net, "mtu", size=str(spec.mtu))
    for subnet in spec.subnets:
        if subnet.gateway is None:
            continue
        prefix = ipaddress.ip_network(subnet.cidr).prefixlen
        ip = ET.SubElement(net, "ip", address=subnet.gateway, prefix=str(prefix))
        if subnet.dhcp:
            dhcp = ET.SubElement(ip, "dhcp")
            for res in subnet.reservations:
                _host_el(dhcp, res)
    if spec.mode == "overlay":
        # the DHCP options the network agent keeps (the router, once the network
        # has one): dnsmasq reads them at start and again on SIGHUP
        options = ET.SubElement(net, f"{{{DNSMASQ_NS}}}options")
        ET.SubElement(
            options, f"{{{DNSMASQ_NS}}}option", value=f"dhcp-optsfile={dhcp_opts_file(spec.name)}"
        )
    return ET.tostring(net, encoding="unicode")


def reservations_of(xml: str) -> dict[str, str]:
    """mac -> ip of the DHCP reservations in a network's description."""
    return {r.mac: r.ip for r in reservation_list(xml)}


def reservation_list(xml: str) -> list[Reservation]:
    root = ET.fromstring(xml)
    return [
        Reservation(h.get("mac", "").lower(), h.get("ip", ""), h.get("name"))
        for h in root.findall("./ip/dhcp/host")
    ]


def bridge_of(xml: str) -> str:
    bridge = ET.fromstring(xml).find("bridge")
    return "" if bridge is None else bridge.get("name", "")


# a network's reservations are read, changed and written back: one change at a time
# per host and network (a boot's reservation and an overlay sync's raced: the second
# add found the first's entry and libvirt refused it)
_reservation_locks = KeyedLocks()


class NetworkDriver(DriverBase):
    def ensure_network(self, host: HostRef, spec: NetworkSpec) -> None:
        """Define, start and autostart the network on the host (idempotent)."""

        def ensure(conn: libvirt.virConnect) -> None:
            net = self._lookup(conn, spec.name)
            if net is None:
                net = conn.networkDefineXML(network_xml(spec))
                net.setAutostart(1)
            if not net.isActive():
                net.create()

        self._call(host, ensure, f"network {spec.name}")

    def remove_network(self, host: HostRef, name: str) -> None:
        """Stop and undefine the network (its bridge goes with it)."""

        def remove(conn: libvirt.virConnect) -> None:
            net = self._lookup(conn, name)
            if net is None:
                return
            if net.isActive():
                net.destroy()
            net.undefine()

        self._call(host, remove, f"network {name}")

    def network_description(self, host: HostRef, name: str) -> str | None:
        """The network's definition as libvirt keeps it (None: not defined there)."""

        def describe(conn: libvirt.virConnect) -> str | None:
            net = self._lookup(conn, name)
            return None if net is None else net.XMLDesc(libvirt.VIR_NETWORK_XML_INACTIVE)

        return self._call(host, describe, f"network {name}")

    def reserve(self, host: HostRef, name: str, res: Reservation) -> None:
        """Add the DHCP reservation to the running network and its definition."""
        self._update(host, name, res, add=True)

    def unreserve(self, host: HostRef, name: str, res: Reservation) -> None:
        self._update(host, name, res, add=False)

    def sync_reservations(self, host: HostRef, name: str, wanted: list[Reservation]) -> None:
        """Make the network's reservations exactly ``wanted`` (names included): those
        missing are added, those not wanted (or changed) removed, live and in the
        definition, in one connection."""

        def sync(conn: libvirt.virConnect) -> None:
            net = self._lookup(conn, name)
            if net is None:
                raise libvirt.libvirtError(f"network {name} is not defined on the host")
            have = set(reservation_list(net.XMLDesc(libvirt.VIR_NETWORK_XML_INACTIVE)))
            want = {Reservation(r.mac.lower(), r.ip, r.hostname) for r in wanted}
            for old in sorted(have - want, key=lambda r: r.mac):
                self._apply(net, libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE, old)
            for new in sorted(want - have, key=lambda r: r.mac):
                self._apply(net, libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, new)

        with _reservation_locks((host.uri, name)):
            self._call(host, sync, f"network {name}")

    def _update(self, host: HostRef, name: str, res: Reservation, add: bool) -> None:
        def update(conn: libvirt.virConnect) -> None:
            net = self._lookup(conn, name)
            if net is None:
                if add:
                    raise libvirt.libvirtError(f"network {name} is not defined on the host")
                return
            known = reservation_list(net.XMLDesc(libvirt.VIR_NETWORK_XML_INACTIVE))
            mac = res.mac.lower()
            mine = [r for r in known if r.mac == mac]
            if add and [(r.ip, r.hostname) for r in mine] == [(res.ip, res.hostname)]:
                return
            if not add and not mine:
                return
            # entries in the way: this MAC's old address, or a stale holder of the
            # address (left by a host that was unreachable when its port was deleted)
            for old in [r for r in known if r.mac == mac or add and r.ip == res.ip]:
                self._apply(net, libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE, old)
            if add:
                self._apply(net, libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, res)

        with _reservation_locks((host.uri, name)):
            self._call(host, update, f"network {name}")

    @staticmethod
    def _apply(net: libvirt.virNetwork, command: int, res: Reservation) -> None:
        flags = libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG
        if net.isActive():
            flags |= libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE
        # parent index -1: the <ip> element that has DHCP
        net.update(
            command, libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, -1, reservation_xml(res), flags
        )

    @staticmethod
    def _lookup(conn: libvirt.virConnect, name: str) -> libvirt.virNetwork | None:
        try:
            return conn.networkLookupByName(name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_NETWORK:
                return None
            raise
