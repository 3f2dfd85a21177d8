"""Instance snapshots as libvirt internal snapshots: inside each qcow2 disk, with the
memory state too when the instance runs. Idempotent, like every driver call."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import libvirt

from nubis.drivers.libvirt.base import DriverBase, HostRef


def snapshot_xml(name: str, description: str, memory: bool) -> str:
    snap = ET.Element("domainsnapshot")
    ET.SubElement(snap, "name").text = name
    ET.SubElement(snap, "description").text = description
    ET.SubElement(snap, "memory", snapshot="internal" if memory else "no")
    return ET.tostring(snap, encoding="unicode")


class SnapshotDriver(DriverBase):
    @staticmethod
    def _find(dom: libvirt.virDomain, name: str) -> libvirt.virDomainSnapshot | None:
        try:
            return dom.snapshotLookupByName(name, 0)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
                return None
            raise

    def create(self, host: HostRef, uuid: str, name: str, description: str) -> bool:
        """Snapshot every disk; a running (or paused) domain's memory is saved too.
        Returns whether the memory state was included."""

        def create(conn: libvirt.virConnect) -> bool:
            dom = self._domain(conn, uuid)
            existing = self._find(dom, name)
            if existing is not None:
                return _has_memory(existing)
            memory = bool(dom.isActive())
            dom.snapshotCreateXML(snapshot_xml(name, description, memory), 0)
            return memory

        return self._call(host, create, f"snapshot {name} of domain {uuid}")

    def revert(self, host: HostRef, uuid: str, name: str) -> None:
        """Disks (and memory, when saved) back to the snapshot: a snapshot of a
        running domain leaves it running from that moment, one of a stopped domain
        leaves it stopped."""

        def revert(conn: libvirt.virConnect) -> None:
            dom = self._domain(conn, uuid)
            snap = dom.snapshotLookupByName(name, 0)
            dom.revertToSnapshot(snap, 0)

        self._call(host, revert, f"snapshot {name} of domain {uuid}")

    def delete(self, host: HostRef, uuid: str, name: str) -> None:
        def delete(conn: libvirt.virConnect) -> None:
            dom = self._find_domain(conn, uuid)
            if dom is None:
                return
            snap = self._find(dom, name)
            if snap is not None:
                snap.delete(0)

        self._call(host, delete, f"snapshot {name} of domain {uuid}")

    def names(self, host: HostRef, uuid: str) -> list[str]:
        return self._call(
            host, lambda c: self._domain(c, uuid).snapshotListNames(0), f"domain {uuid}"
        )


def _has_memory(snap: libvirt.virDomainSnapshot) -> bool:
    memory = ET.fromstring(snap.getXMLDesc(0)).find("memory")
    return memory is not None and memory.get("snapshot") == "internal"
