"""The VNC console of domains: where it listens, and one-time passwords for it.

A domain's VNC server listens on its host's management address (the host of its
libvirt URI; loopback for a local libvirtd), never on every interface, and always
has a password: a random one nobody is told at definition, then a fresh one with a
short validity (``passwdValidTo``) for each console ticket.
"""

from __future__ import annotations

import ipaddress
import xml.etree.ElementTree as ET
from datetime import datetime
from urllib.parse import urlparse

import libvirt

from nubis.drivers.errors import DriverError
from nubis.drivers.libvirt.base import DriverBase, HostRef

LOOPBACK = "127.0.0.1"
VNC_PASSWORD_LENGTH = 8  # RFB's VNC authentication uses the first 8 bytes only


def console_address(uri: str) -> str:
    """The address a host's VNC servers listen on: its libvirt URI's host (the
    management network), or loopback for a local URI. Never a wildcard."""
    host = urlparse(uri).hostname
    if not host or host == "localhost":
        return LOOPBACK
    try:
        if ipaddress.ip_address(host).is_unspecified:
            raise DriverError(f"host URI {uri!r} names a wildcard address")
    except ValueError:
        pass  # a DNS name: the management network's
    return host


def with_listen(xml: str, address: str) -> str:
    """A domain XML whose VNC server listens on ``address`` (for another host)."""
    root = ET.fromstring(xml)
    for graphics in root.findall("./devices/graphics[@type='vnc']"):
        graphics.set("listen", address)
        for listen in graphics.findall("listen"):
            if listen.get("type") == "address":
                listen.set("address", address)
    return ET.tostring(root, encoding="unicode")


class ConsoleDriver(DriverBase):
    def vnc_endpoint(self, host: HostRef, uuid: str) -> tuple[str, int]:
        """(address, port) of a running domain's VNC server."""

        def read(conn: libvirt.virConnect) -> tuple[str, int]:
            dom = self._domain(conn, uuid)
            if not dom.isActive():
                raise DriverError(f"domain {uuid} is not running")
            graphics = ET.fromstring(dom.XMLDesc(0)).find("./devices/graphics[@type='vnc']")
            port = int(graphics.get("port", "-1")) if graphics is not None else -1
            if graphics is None or port <= 0:
                raise DriverError(f"domain {uuid} has no VNC server")
            listen = graphics.get("listen") or LOOPBACK
            return listen, port

        return self._call(host, read, f"domain {uuid}")

    def set_vnc_password(self, host: HostRef, uuid: str, password: str, valid_to: datetime) -> None:
        """Give the running domain's VNC server a new password, valid until ``valid_to``
        (UTC); existing VNC sessions go on, new ones need this password."""

        def update(conn: libvirt.virConnect) -> None:
            dom = self._domain(conn, uuid)
            xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE)
            graphics = ET.fromstring(xml).find("./devices/graphics[@type='vnc']")
            if graphics is None:
                raise DriverError(f"domain {uuid} has no VNC server")
            graphics.set("passwd", password)
            graphics.set("passwdValidTo", valid_to.strftime("%Y-%m-%dT%H:%M:%S"))
            dom.updateDeviceFlags(
                ET.tostring(graphics, encoding="unicode"), libvirt.VIR_DOMAIN_AFFECT_LIVE
            )

        self._call(host, update, f"domain {uuid}")
