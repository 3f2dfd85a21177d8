"""Packet filters on the hosts (libvirt nwfilter): anti-spoofing and security groups.

Each port has its own filter, referenced by its NIC with the port's address::

    nubis-port-<port>   clean-traffic (only the port's MAC and IP may leave, no ARP
                        spoofing, no other L2 protocols), no DHCP server answers
                        out (only the host's dnsmasq answers DHCP), DHCP answers
                        in, every group's filter, nothing else inbound; outbound:
                        a port in groups starts only what their egress rules
                        allow, a port in none starts anything
    nubis-sg-<group>    one accept rule per (rule x remote address) of the group
    nubis-scope-<net>   no traffic into the cluster's other networks (isolated:
                        no new connection but into its own subnets), DHCP out

The scope's rules are all drops (its DHCP accept aside), ordered before the groups'
accepts: a group's rule never opens what the scope closes, and the scope never
opens what the groups' egress rules keep closed.

Defining a filter again under its name replaces its rules on every running NIC
that uses it: a changed group applies at once, the instances keep running.
"""

from __future__ import annotations

import ipaddress
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import libvirt

from nubis.drivers.libvirt.base import DriverBase, HostRef

PROTOCOLS = ("tcp", "udp", "icmp", "any")
# rules are ordered by priority across the filters a port references
ACCEPT_PRIORITY, DROP_PRIORITY, DHCP_PRIORITY = "500", "1000", "100"
ROGUE_DHCP_PRIORITY = "90"  # before any accept
SCOPE_PRIORITY, SCOPE_ACCEPT_PRIORITY = "400", "410"


@dataclass(frozen=True)
class Allow:
    """``in``: let in ``protocol`` traffic from ``remote`` (a CIDR or one address), to
    the destination ports ``port_min``-``port_max`` for tcp and udp; ``out``: let
    the port start such traffic to ``remote``."""

    protocol: str
    remote: str = "0.0.0.0/0"
    port_min: int | None = None
    port_max: int | None = None
    direction: str = "in"


def _rule(parent: ET.Element, action: str, direction: str, priority: str) -> ET.Element:
    return ET.SubElement(parent, "rule", action=action, direction=direction, priority=priority)


def _filter(name: str, uuid: str, chain: str) -> ET.Element:
    """A filter element; its uuid is fixed (libvirt refuses a redefinition under the
    same name with another uuid, and makes up a new one when none is given)."""
    root = ET.Element("filter", name=name, chain=chain)
    ET.SubElement(root, "uuid").text = uuid
    return root


def group_filter_xml(name: str, uuid: str, rules: list[Allow]) -> str:
    root = _filter(name, uuid, "root")  # in "ipv4" libvirt puts them after the drop
    for allow in rules:
        match = ET.SubElement(
            _rule(root, "accept", allow.direction, ACCEPT_PRIORITY),
            "all" if allow.protocol == "any" else allow.protocol,
        )
        remote = ipaddress.ip_network(allow.remote)
        side = "src" if allow.direction == "in" else "dst"
        if remote.prefixlen:
            match.set(f"{side}ipaddr", str(remote.network_address))
            match.set(f"{side}ipmask", str(remote.prefixlen))
        if allow.protocol in ("tcp", "udp") and allow.port_min is not None:
            match.set("dstportstart", str(allow.port_min))
            match.set("dstportend", str(allow.port_max or allow.port_min))
    return ET.tostring(root, encoding="unicode")


def _ip_match(rule: ET.Element, cidr: str, side: str) -> ET.Element:
    net = ipaddress.ip_network(cidr)
    return ET.SubElement(
        rule,
        "all",
        {f"{side}ipaddr": str(net.network_address), f"{side}ipmask": str(net.prefixlen)},
    )


def outside(keep: list[str]) -> list[str]:
    """The IPv4 space but ``keep``, as the fewest CIDRs."""
    rest = [ipaddress.IPv4Network("0.0.0.0/0")]
    for cidr in keep:
        net = ipaddress.IPv4Network(cidr)
        left: list[ipaddress.IPv4Network] = []
        for part in rest:
            if net.subnet_of(part):
                left += part.address_exclude(net)
            elif not part.subnet_of(net):
                left.append(part)
        rest = left
    return [str(n) for n in ipaddress.collapse_addresses(rest)]


def scope_filter_xml(
    name: str, uuid: str, own: list[str], others: list[str], isolated: bool
) -> str:
    """What a network's ports may send to. The host routes between all its bridges
    and libvirt's own isolation rules never see traffic a port filter accepted, so
    the ports of a network are kept here from the other networks' subnets; an
    isolated network's ports start connections into their own subnets only (and
    DHCP's broadcast). Drops only, so that the groups' egress rules, after them,
    still decide what of the rest a port may start."""
    root = _filter(name, uuid, "root")
    for cidr in others:
        _ip_match(_rule(root, "drop", "out", SCOPE_PRIORITY), cidr, "dst")
    if isolated:
        # new connections only: with a state given, libvirt adds no rule for the
        # reverse direction (a plain drop would also drop what comes in, before the
        # security groups' rules let it in)
        for cidr in outside([*own, "255.255.255.255/32"]):
            _ip_match(_rule(root, "drop", "out", SCOPE_PRIORITY), cidr, "dst").set("state", "NEW")
    ET.SubElement(
        _rule(root, "accept", "out", SCOPE_ACCEPT_PRIORITY),
        "udp",
        srcportstart="68",
        dstportstart="67",
    )
    return ET.tostring(root, encoding="unicode")


def port_filter_xml(name: str, uuid: str, scope: str, group_filters: list[str]) -> str:
    """A port in groups starts what their egress rules allow; a port in none, anything."""
    root = _filter(name, uuid, "root")
    ET.SubElement(root, "filterref", filter="clean-traffic")
    # a guest answering DHCP (server port 67 to client port 68) could hand its
    # neighbours another gateway: only the host's dnsmasq answers
    ET.SubElement(
        _rule(root, "drop", "out", ROGUE_DHCP_PRIORITY), "udp", srcportstart="67", dstportstart="68"
    )
    ET.SubElement(root, "filterref", filter=scope)
    ET.SubElement(
        _rule(root, "accept", "in", DHCP_PRIORITY), "udp", srcportstart="67", dstportstart="68"
    )
    for group in group_filters:
        ET.SubElement(root, "filterref", filter=group)
    if group_filters:
        ET.SubElement(_rule(root, "drop", "out", DROP_PRIORITY), "all", state="NEW")
    else:
        ET.SubElement(_rule(root, "accept", "out", ACCEPT_PRIORITY), "all")
    ET.SubElement(_rule(root, "drop", "in", DROP_PRIORITY), "all")
    return ET.tostring(root, encoding="unicode")


class FilterDriver(DriverBase):
    def define(self, host: HostRef, xml: str) -> None:
        """Define (or redefine: running NICs take the new rules) a filter."""
        self._call(host, lambda conn: conn.nwfilterDefineXML(xml), "network filter")

    def redefine_if_present(self, host: HostRef, name: str, xml: str) -> bool:
        """Redefine a filter where it exists (a host without it has no NIC using it)."""

        def redefine(conn: libvirt.virConnect) -> bool:
            if self._lookup(conn, name) is None:
                return False
            conn.nwfilterDefineXML(xml)
            return True

        return self._call(host, redefine, f"network filter {name}")

    def remove(self, host: HostRef, name: str) -> None:
        """Undefine the filter if it exists (libvirt refuses while a NIC uses it)."""

        def remove_(conn: libvirt.virConnect) -> None:
            found = self._lookup(conn, name)
            if found is not None:
                found.undefine()

        self._call(host, remove_, f"network filter {name}")

    @staticmethod
    def _lookup(conn: libvirt.virConnect, name: str) -> libvirt.virNWFilter | None:
        try:
            return conn.nwfilterLookupByName(name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_NWFILTER:
                return None
            raise
