"""NICs of defined domains: hot-plug, unplug, and live changes (bandwidth limits).

Each call changes the domain's persistent definition and, when it runs, the
running machine too, and is idempotent (a NIC already there, or already gone,
is left as it is), so a task re-run after a crash does the right thing.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import libvirt

from nubis.drivers.errors import DriverError
from nubis.drivers.libvirt.base import DriverBase, HostRef
from nubis.drivers.libvirt.domain_xml import InterfaceSpec, interface_xml

LIVE, CONFIG = libvirt.VIR_DOMAIN_AFFECT_LIVE, libvirt.VIR_DOMAIN_AFFECT_CONFIG


def _macs(dom: libvirt.virDomain, inactive: bool) -> set[str]:
    flags = libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0
    root = ET.fromstring(dom.XMLDesc(flags))
    return {m.get("address", "").lower() for m in root.findall("./devices/interface/mac")}


class NicDriver(DriverBase):
    def attach_nic(self, host: HostRef, uuid: str, nic: InterfaceSpec) -> None:
        """Add the NIC to the definition and plug it into the running machine."""

        def attach(conn: libvirt.virConnect) -> None:
            dom = self._domain(conn, uuid)
            xml, mac = interface_xml(nic), nic.mac.lower()
            if mac not in _macs(dom, inactive=True):
                dom.attachDeviceFlags(xml, CONFIG)
            if dom.isActive() and mac not in _macs(dom, inactive=False):
                dom.attachDeviceFlags(xml, LIVE)

        self._call(host, attach, f"domain {uuid}")

    def detach_nic(self, host: HostRef, uuid: str, nic: InterfaceSpec, timeout: float = 30) -> None:
        """Unplug the NIC (waiting until the guest has let it go), then drop it from
        the definition."""

        xml, mac = interface_xml(nic), nic.mac.lower()

        def unplug(conn: libvirt.virConnect) -> None:
            dom = self._domain(conn, uuid)
            if dom.isActive() and mac in _macs(dom, inactive=False):
                dom.detachDeviceFlags(xml, LIVE)

        def released(conn: libvirt.virConnect) -> bool:
            dom = self._domain(conn, uuid)
            return not dom.isActive() or mac not in _macs(dom, inactive=False)

        def forget(conn: libvirt.virConnect) -> None:
            dom = self._domain(conn, uuid)
            if mac in _macs(dom, inactive=True):
                dom.detachDeviceFlags(xml, CONFIG)

        what = f"domain {uuid}"
        self._call(host, unplug, what)
        if not self._poll(host, released, timeout, what):
            raise DriverError(
                f"the guest did not release NIC {mac} within {timeout:.0f}s "
                "(does it ignore unplug requests?)"
            )
        self._call(host, forget, what)

    def update_nic(self, host: HostRef, uuid: str, nic: InterfaceSpec) -> None:
        """Change the NIC (its bandwidth limits) in the definition and, live, in the
        running machine: the guest sees no unplug."""

        def update(conn: libvirt.virConnect) -> None:
            dom = self._domain(conn, uuid)
            flags = CONFIG | (LIVE if dom.isActive() else 0)
            dom.updateDeviceFlags(interface_xml(nic), flags)

        self._call(host, update, f"domain {uuid}")
