"""The libvirt compute driver: the one facade the task layer calls for hosts and VMs.

Every method is idempotent where it can be (create-if-missing, delete-if-present),
so a task step can run again after a crash without harm.
"""

from __future__ import annotations

import threading
import uuid as uuids
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import libvirt

from nubis.drivers.errors import DriverError, NotFound
from nubis.drivers.libvirt import storage, streams
from nubis.drivers.libvirt.base import DriverBase, HostRef, unless_done
from nubis.drivers.libvirt.connection import (
    ConnectionPool,
    power_state,
    translate,
)
from nubis.drivers.libvirt.console import console_address, with_listen
from nubis.drivers.libvirt.domain_xml import DiskSpec, DomainSpec, build_domain_xml, disk_xml

DISK_POOL = "nubis-disks"
CONSOLE_POOL = "nubis-console"


@dataclass(frozen=True)
class HostInfo:
    hostname: str
    arch: str
    cpu_model: str
    cpus: int
    sockets: int
    cores: int
    threads: int
    memory_mib: int
    virt_type: str  # kvm when the CPU can do it and libvirt offers it, else qemu
    disk_gib: int  # capacity of the host's disk pool (0 before it exists)


def _drive(domain_xml: str, target: str) -> ET.Element | None:
    for disk in ET.fromstring(domain_xml).findall("./devices/disk"):
        el = disk.find("target")
        if el is not None and el.get("dev") == target:
            return disk
    return None


def _with_source(disk: ET.Element, path: str | None) -> str:
    """The drive's own ``<disk>`` (its boot order, address... unchanged: libvirt refuses
    other changes with the medium) with a new medium, or none."""
    for source in disk.findall("source"):
        disk.remove(source)
    if path:
        source = ET.Element("source", file=path)
        disk.insert(1, source)
    return ET.tostring(disk, encoding="unicode")


def detect_virt_type(capabilities_xml: str) -> str:
    """``kvm`` only when libvirt offers it *and* the host CPU has VT-x/AMD-V."""
    caps = ET.fromstring(capabilities_xml)
    features = {f.get("name") for f in caps.findall("./host/cpu/feature")}
    kvm_offered = any(d.get("type") == "kvm" for d in caps.findall("./guest/arch/domain"))
    return "kvm" if kvm_offered and features & {"vmx", "svm"} else "qemu"


class LibvirtDriver(DriverBase):
    def __init__(self, pool: ConnectionPool, disk_path: Path, console_path: Path) -> None:
        super().__init__(pool)
        self.disk_path = disk_path
        self.console_path = console_path

    # -- hosts --------------------------------------------------------------------
    def probe_host(self, host: HostRef) -> HostInfo:
        def probe(conn: libvirt.virConnect) -> HostInfo:
            caps_xml = conn.getCapabilities()
            caps = ET.fromstring(caps_xml)
            topo = caps.find("./host/cpu/topology")
            arch, memory_mib, cpus = conn.getInfo()[:3]
            try:
                disk_bytes = conn.storagePoolLookupByName(DISK_POOL).info()[1]
            except libvirt.libvirtError:
                disk_bytes = 0
            return HostInfo(
                hostname=conn.getHostname(),
                arch=arch,
                cpu_model=caps.findtext("./host/cpu/model", "unknown"),
                cpus=cpus,
                sockets=int(topo.get("sockets", 1)) if topo is not None else 1,
                cores=int(topo.get("cores", cpus)) if topo is not None else cpus,
                threads=int(topo.get("threads", 1)) if topo is not None else 1,
                memory_mib=memory_mib,
                virt_type=detect_virt_type(caps_xml),
                disk_gib=disk_bytes // 1024**3,
            )

        return self._call(host, probe, "host")

    def crashed(self, host: HostRef, uuid: str) -> bool:
        """The domain is off because its QEMU process died (killed, crashed), not by a
        shutdown or a stop."""

        def crashed(conn: libvirt.virConnect) -> bool:
            dom = self._find_domain(conn, uuid)
            if dom is None:
                return False
            state, reason = dom.state()
            return state == libvirt.VIR_DOMAIN_SHUTOFF and reason in (
                libvirt.VIR_DOMAIN_SHUTOFF_CRASHED,
                libvirt.VIR_DOMAIN_SHUTOFF_FAILED,
            )

        return self._call(host, crashed, f"domain {uuid}")

    def ping(self, host: HostRef) -> None:
        """The cheapest round trip to libvirtd (its version): is it answering at all?"""
        self._call(host, lambda conn: conn.getLibVersion(), "host")

    def prepare_host(self, host: HostRef) -> None:
        """Create the storage pools Nubis uses on the host (idempotent)."""

        def prepare(conn: libvirt.virConnect) -> None:
            storage.ensure_pool(conn, DISK_POOL, self.disk_path)
            storage.ensure_pool(conn, CONSOLE_POOL, self.console_path)

        self._call(host, prepare, "storage pool")

    def forget_host(self, host: HostRef) -> None:
        self.conns.close(host.uri)

    # -- volumes ------------------------------------------------------------------
    def volume_path(self, host: HostRef, name: str) -> str | None:
        def find(conn: libvirt.virConnect) -> str | None:
            vol = storage.find_volume(conn.storagePoolLookupByName(DISK_POOL), name)
            return vol.path() if vol is not None else None

        return self._call(host, find, f"volume {name}")

    def upload_volume(self, host: HostRef, name: str, source: Path) -> str:
        def upload(conn: libvirt.virConnect) -> str:
            pool = conn.storagePoolLookupByName(DISK_POOL)
            storage.delete_volume(pool, name)  # a partial copy from an interrupted run
            return storage.upload_file(conn, pool, name, source)

        return self._call(host, upload, f"volume {name}")

    def create_disk(
        self, host: HostRef, name: str, capacity: int, backing: tuple[str, str] | None = None
    ) -> str:
        """A qcow2 disk: a linked clone of ``backing`` (path, format), or blank without.
        Returns its path; an existing volume of that name is reused (idempotent)."""

        def create(conn: libvirt.virConnect) -> str:
            pool = conn.storagePoolLookupByName(DISK_POOL)
            existing = storage.find_volume(pool, name)
            if existing is not None:
                return existing.path()
            if backing is None:
                return storage.create_blank(pool, name, capacity)
            return storage.create_overlay(pool, name, backing[0], backing[1], capacity)

        return self._call(host, create, f"volume {name}")

    def copy_disk(
        self,
        host: HostRef,
        name: str,
        source_path: str,
        source_format: str,
        capacity: int,
        backing: tuple[str, str] | None = None,
    ) -> str:
        """A full, independent qcow2 copy of the disk at ``source_path``, read as its
        recorded ``source_format`` (a qcow2 one may name ``backing`` and nothing else;
        see ``storage.copy_from``), its backing chain flattened by qemu-img convert,
        at least ``capacity`` bytes. Not idempotent on its own: callers mark
        completion (``create_marker``)."""

        return self._call(
            host,
            lambda c: storage.copy_from(
                c,
                c.storagePoolLookupByName(DISK_POOL),
                name,
                source_path,
                source_format,
                "qcow2",
                capacity,
                backing,
            ),
            f"volume {name}",
        )

    def download(
        self,
        host: HostRef,
        name: str,
        write: Callable[[bytes], None],
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        """Stream a volume of the disk pool to ``write``, chunk by chunk."""

        def download(conn: libvirt.virConnect) -> None:
            vol = conn.storagePoolLookupByName(DISK_POOL).storageVolLookupByName(name)
            transfer = streams.open_download(conn, vol, f"download of volume {name}")
            streams.drain(transfer, write, on_progress)

        self._call(host, download, f"volume {name}")

    def create_marker(self, host: HostRef, name: str) -> None:
        """An empty volume whose existence records that some work completed."""

        def create(conn: libvirt.virConnect) -> None:
            pool = conn.storagePoolLookupByName(DISK_POOL)
            if storage.find_volume(pool, name) is None:
                storage.create_empty(pool, name)

        self._call(host, create, f"volume {name}")

    def grow_disk(self, host: HostRef, name: str, capacity: int) -> None:
        """Grow a disk of the disk pool that no running domain uses (never shrinks)."""
        self._call(
            host,
            lambda c: storage.grow_volume(
                c, c.storagePoolLookupByName(DISK_POOL), name, capacity, "qcow2"
            ),
            f"volume {name}",
        )

    def delete_volume(self, host: HostRef, name: str) -> bool:
        return self._call(
            host,
            lambda c: storage.delete_volume(c.storagePoolLookupByName(DISK_POOL), name),
            f"volume {name}",
        )

    def list_volumes(self, host: HostRef) -> list[str]:
        def names(conn: libvirt.virConnect) -> list[str]:
            result = []
            for pool_name in (DISK_POOL, CONSOLE_POOL):
                pool = conn.storagePoolLookupByName(pool_name)
                storage.refresh(pool)
                result += pool.listVolumes()
            return result

        return self._call(host, names)

    # -- hosts that share no disk directory ------------------------------------------
    def shares_disks(self, a: HostRef, b: HostRef) -> bool:
        """Whether two hosts' disk pools are one directory (shared storage): a marker
        made through ``a`` is looked for through ``b``, then removed."""
        name = f"nubis-probe-{uuids.uuid4().hex}"
        self.create_marker(a, name)
        try:
            return self.volume_path(b, name) is not None
        finally:
            self.delete_volume(a, name)

    def volume_capacity(self, host: HostRef, name: str) -> int | None:
        """The size in bytes of a disk-pool volume as its guest sees it (None: no such
        volume)."""

        def capacity(conn: libvirt.virConnect) -> int | None:
            vol = storage.find_volume(conn.storagePoolLookupByName(DISK_POOL), name)
            return None if vol is None else int(vol.info()[1])

        return self._call(host, capacity, f"volume {name}")

    def copy_to_host(self, source: HostRef, target: HostRef, name: str) -> None:
        """The file of the source's disk-pool volume ``name``, byte for byte, as the same
        volume of the target's disk pool (a partial copy an earlier try left is
        replaced; a failed copy leaves none)."""

        def copy(sconn: libvirt.virConnect, dconn: libvirt.virConnect) -> None:
            vol = storage.find_volume(sconn.storagePoolLookupByName(DISK_POOL), name)
            if vol is None:
                raise NotFound(f"volume {name} is not on the source host")
            pool = dconn.storagePoolLookupByName(DISK_POOL)
            storage.delete_volume(pool, name)
            length = storage.file_size(vol)
            copied = pool.createXML(storage.volume_xml(name, length, "raw"), 0)
            try:
                if length:
                    upload = streams.open_upload(dconn, copied, length, f"copy of {name}")
                    try:
                        streams.drain(streams.open_download(sconn, vol, name), upload.write)
                        upload.finish()
                    except BaseException:
                        upload.abort()
                        raise
            except BaseException:
                copied.delete(0)
                raise

        what = f"volume {name}"
        self._call(source, lambda s: self._call(target, lambda d: copy(s, d), what), what)

    # -- console log --------------------------------------------------------------
    def console_log_path(self, domain_name: str) -> str:
        return str(self.console_path / f"{domain_name}.log")

    def read_console_log(self, host: HostRef, domain_name: str, max_bytes: int) -> bytes:
        def read(conn: libvirt.virConnect) -> bytes:
            pool = conn.storagePoolLookupByName(CONSOLE_POOL)
            try:
                return storage.read_tail(conn, pool, f"{domain_name}.log", max_bytes)
            except NotFound:
                return b""

        return self._call(host, read, "console log")

    def delete_console_log(self, host: HostRef, domain_name: str) -> bool:
        return self._call(
            host,
            lambda c: storage.delete_volume(
                c.storagePoolLookupByName(CONSOLE_POOL), f"{domain_name}.log"
            ),
            "console log",
        )

    # -- domains ------------------------------------------------------------------
    def define(self, host: HostRef, spec: DomainSpec) -> None:
        def define(conn: libvirt.virConnect) -> None:
            if self._find_domain(conn, spec.uuid) is None:
                conn.defineXML(build_domain_xml(spec))

        self._call(host, define, f"domain {spec.name}")

    def redefine(self, host: HostRef, spec: DomainSpec) -> None:
        """Replace the persistent definition of a domain (or define it): takes effect
        at its next start."""
        self._call(host, lambda c: c.defineXML(build_domain_xml(spec)), f"domain {spec.name}")

    def domain_xml(self, host: HostRef, uuid: str) -> str:
        return self._call(host, lambda c: self._domain(c, uuid).XMLDesc(0), f"domain {uuid}")

    def state(self, host: HostRef, uuid: str) -> str | None:
        """running | paused | suspended | stopped, or None when the domain is not defined."""

        def state(conn: libvirt.virConnect) -> str | None:
            dom = self._find_domain(conn, uuid)
            return power_state(dom) if dom is not None else None

        return self._call(host, state, f"domain {uuid}")

    def list_domains(self, host: HostRef) -> dict[str, str]:
        """uuid -> power state of every domain Nubis owns on the host."""

        def states(conn: libvirt.virConnect) -> dict[str, str]:
            # the suspended ones in one call, not one question per stopped domain
            saved = {
                d.UUIDString()
                for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_MANAGEDSAVE)
            }
            found = {}
            for d in conn.listAllDomains(0):
                if d.name().startswith("nubis-"):
                    uuid = d.UUIDString()
                    found[uuid] = power_state(d, uuid in saved)
            return found

        return self._call(host, states)

    def start(self, host: HostRef, uuid: str) -> None:
        def start(conn: libvirt.virConnect) -> None:
            dom = self._domain(conn, uuid)
            state = power_state(dom)
            if state in ("stopped", "suspended"):  # a suspended one is restored
                unless_done(dom.create, lambda: bool(dom.isActive()))
            elif state == "paused":
                unless_done(dom.resume, lambda: power_state(dom) == "running")

        self._call(host, start, f"domain {uuid}")

    def shutdown(self, host: HostRef, uuid: str, timeout: float) -> bool:
        """ACPI power-button shutdown; True if the guest stopped within ``timeout``."""

        def request(conn: libvirt.virConnect) -> bool:
            dom = self._domain(conn, uuid)
            if not dom.isActive():
                return True
            # it may have stopped meanwhile (or a repeat found it off)
            unless_done(dom.shutdown, lambda: not dom.isActive())
            return False

        def stopped(conn: libvirt.virConnect) -> bool:
            return not self._domain(conn, uuid).isActive()

        if self._call(host, request, f"domain {uuid}"):
            return True
        return self._poll(host, stopped, timeout, f"domain {uuid}")

    def destroy(self, host: HostRef, uuid: str) -> None:
        def destroy(conn: libvirt.virConnect) -> None:
            dom = self._find_domain(conn, uuid)
            if dom is not None and dom.isActive():
                unless_done(dom.destroy, lambda: not dom.isActive())

        self._call(host, destroy, f"domain {uuid}")

    def reboot(self, host: HostRef, uuid: str, hard: bool = False) -> None:
        """Graceful (ACPI, libvirt restarts the guest once it powers off) or a hard reset."""

        def reboot(conn: libvirt.virConnect) -> None:
            dom = self._domain(conn, uuid)
            if hard:
                dom.reset(0)
            else:
                dom.reboot(0)

        # not repeated on a new connection: a reboot that was done would be done twice
        self._call(host, reboot, f"domain {uuid}", retry=False)

    def pause(self, host: HostRef, uuid: str) -> None:
        def pause(conn: libvirt.virConnect) -> None:
            dom = self._domain(conn, uuid)
            if power_state(dom) != "paused":  # idempotent: a repeat after a reconnect
                unless_done(dom.suspend, lambda: power_state(dom) == "paused")

        self._call(host, pause, f"domain {uuid}")

    def resume(self, host: HostRef, uuid: str) -> None:
        def resume(conn: libvirt.virConnect) -> None:
            dom = self._domain(conn, uuid)
            if power_state(dom) == "paused":
                unless_done(dom.resume, lambda: power_state(dom) != "paused")

        self._call(host, resume, f"domain {uuid}")

    def save(self, host: HostRef, uuid: str) -> None:
        """Suspend to disk: the guest's memory is written to a managed save image on the
        host and QEMU ends; the next start restores it, running (even if it was paused)."""

        def save(conn: libvirt.virConnect) -> None:
            dom = self._domain(conn, uuid)
            if dom.isActive():
                dom.managedSave(libvirt.VIR_DOMAIN_SAVE_RUNNING)

        self._call(host, save, f"domain {uuid}")

    def discard_saved(self, host: HostRef, uuid: str) -> None:
        """Forget a suspended domain's saved memory: its next start boots afresh."""

        def discard(conn: libvirt.virConnect) -> None:
            dom = self._find_domain(conn, uuid)
            if dom is not None and dom.hasManagedSaveImage(0):
                dom.managedSaveRemove(0)

        self._call(host, discard, f"domain {uuid}")

    # -- CD-ROM and boot order ------------------------------------------------------
    def change_media(self, host: HostRef, uuid: str, target: str, path: str | None) -> None:
        """Put the disc at ``path`` into the CD-ROM drive ``target``, or empty the drive
        (``None``): at once when the domain runs (the guest's tray lock is overridden),
        and in its persistent definition. A stopped domain without the drive gets one;
        a running one cannot (IDE drives are not hot-pluggable)."""

        def change(conn: libvirt.virConnect) -> None:
            dom = self._domain(conn, uuid)
            config = _drive(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE), target)
            active = bool(dom.isActive())
            live = _drive(dom.XMLDesc(0), target) if active else None
            if active and live is None:
                raise DriverError(
                    "the instance has no CD-ROM drive: stop it once, and the drive is "
                    "added when a disc is inserted"
                )
            if config is None:
                drive = DiskSpec(
                    path=path or "",
                    format="raw",
                    target=target,
                    bus="ide",
                    device="cdrom",
                    readonly=True,
                )
                dom.attachDeviceFlags(disk_xml(drive), libvirt.VIR_DOMAIN_AFFECT_CONFIG)
            else:
                dom.updateDeviceFlags(_with_source(config, path), libvirt.VIR_DOMAIN_AFFECT_CONFIG)
            if live is not None:
                dom.updateDeviceFlags(
                    _with_source(live, path),
                    libvirt.VIR_DOMAIN_AFFECT_LIVE | libvirt.VIR_DOMAIN_DEVICE_MODIFY_FORCE,
                )

        self._call(host, change, f"CD-ROM of domain {uuid}")

    def set_boot_order(self, host: HostRef, uuid: str, targets: list[str]) -> None:
        """Boot from the devices ``targets`` (vda, hdc...) in that order, from the next
        power-on (the persistent definition changes; a running guest is untouched)."""

        def reorder(conn: libvirt.virConnect) -> None:
            dom = self._domain(conn, uuid)
            root = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
            for legacy in root.findall("./os/boot"):
                root.find("os").remove(legacy)  # type: ignore[union-attr]
            for disk in root.findall("./devices/disk"):
                for boot in disk.findall("boot"):
                    disk.remove(boot)
                target = disk.find("target")
                dev = target.get("dev", "") if target is not None else ""
                if dev in targets:
                    ET.SubElement(disk, "boot", order=str(targets.index(dev) + 1))
            conn.defineXML(ET.tostring(root, encoding="unicode"))

        self._call(host, reorder, f"domain {uuid}")

    def undefine(self, host: HostRef, uuid: str) -> None:
        """Destroy and undefine the domain; one that is not there (or goes meanwhile,
        removed by someone else) is what was asked for."""

        def undefine(conn: libvirt.virConnect) -> None:
            dom = self._find_domain(conn, uuid)
            if dom is None:
                return
            try:
                if dom.isActive():
                    dom.destroy()
                flags = (
                    libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                    | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                )
                # the firmware's variables go with a UEFI domain; asked only of one
                # that has them (a driver without firmware files refuses the flag)
                if "<nvram" in dom.XMLDesc(0):
                    flags |= libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
                dom.undefineFlags(flags)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                    raise

        self._call(host, undefine, f"domain {uuid}")

    # -- migration ----------------------------------------------------------------
    def migrate_live(
        self,
        source: HostRef,
        target: HostRef,
        uuid: str,
        max_downtime_ms: int,
        on_progress: Callable[[int], None] | None = None,
        trust_shared_storage: bool = False,
        max_bandwidth_mib_s: int | None = None,
        should_abort: Callable[[], bool] | None = None,
        copy_disks: tuple[str, ...] = (),
    ) -> None:
        """Live-migrate; the domain becomes persistent on the target and is undefined
        on the source. Its disks are shared, except those of ``copy_disks`` (targets
        such as ``vda``): their data written since their backing file is copied with
        the memory, into disks made on the target beforehand (same path, same backing
        file). Blocks until done, reporting progress (0-100); aborts the job (the
        domain stays on the source) once ``should_abort()`` is true."""
        sconn = self.conns.get(source.uri, source.credentials)
        dconn = self.conns.get(target.uri, target.credentials)
        params: dict[str, object] = {}
        address = urlparse(target.uri).hostname
        if address:
            params[libvirt.VIR_MIGRATE_PARAM_URI] = f"tcp://{address}"
        if max_bandwidth_mib_s is not None:
            params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = max_bandwidth_mib_s
        flags = (
            libvirt.VIR_MIGRATE_LIVE
            | libvirt.VIR_MIGRATE_PERSIST_DEST
            | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
        )
        if copy_disks:
            flags |= libvirt.VIR_MIGRATE_NON_SHARED_INC
            params[libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS] = list(copy_disks)
        elif trust_shared_storage:
            flags |= libvirt.VIR_MIGRATE_UNSAFE
        try:
            dom = self._domain(sconn, uuid)
            # the console follows the domain onto the target's management address
            listen = console_address(target.uri)
            secure = libvirt.VIR_DOMAIN_XML_SECURE | libvirt.VIR_DOMAIN_XML_MIGRATABLE
            params[libvirt.VIR_MIGRATE_PARAM_DEST_XML] = with_listen(dom.XMLDesc(secure), listen)
            params[libvirt.VIR_MIGRATE_PARAM_PERSIST_XML] = with_listen(
                dom.XMLDesc(secure | libvirt.VIR_DOMAIN_XML_INACTIVE), listen
            )
        except libvirt.libvirtError as exc:
            raise translate(exc, f"domain {uuid}") from exc
        done = threading.Event()
        watcher = threading.Thread(
            target=self._watch_migration,
            args=(dom, max_downtime_ms, on_progress, should_abort, done, bool(copy_disks)),
            daemon=True,
        )
        watcher.start()
        try:
            dom.migrate3(dconn, params, flags)
        except libvirt.libvirtError as exc:
            raise translate(exc, f"migration of {uuid}") from exc
        finally:
            done.set()
            watcher.join(5)

    @staticmethod
    def _watch_migration(
        dom: libvirt.virDomain,
        max_downtime_ms: int,
        on_progress: Callable[[int], None] | None,
        should_abort: Callable[[], bool] | None,
        done: threading.Event,
        with_disks: bool = False,
    ) -> None:
        """Sets the allowed downtime once the job runs, reports progress (of memory, or
        of memory and disks when disks are copied too) and aborts when asked."""
        downtime_set = False
        while not done.wait(0.3):
            try:
                if should_abort is not None and should_abort():
                    dom.abortJob()  # raises until the job has started: tried again
                    continue
                if not downtime_set:
                    dom.migrateSetMaxDowntime(max_downtime_ms, 0)
                    downtime_set = True
                info = dom.jobInfo()
            except libvirt.libvirtError:
                continue  # the job has not started yet, or just ended
            # jobInfo: [type, elapsed, remaining, data total, processed, remaining,
            # memory total, processed, remaining, ...]; data is memory plus disks
            total, processed = (info[3], info[4]) if with_disks else (info[6], info[7])
            if on_progress is not None and total:
                on_progress(min(99, int(100 * processed / total)))

    def migrate_cold(self, source: HostRef, target: HostRef, uuid: str) -> None:
        """Move a shut-off domain's definition to the target (its disks are there: shared,
        or copied first)."""

        def xml_of(conn: libvirt.virConnect) -> str | None:
            dom = self._find_domain(conn, uuid)
            if dom is None:
                return None
            if dom.isActive():
                raise DriverError("a running domain cannot be cold-migrated")
            flags = libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_MIGRATABLE
            # SECURE keeps the VNC password; the console moves to the target's address
            secure = dom.XMLDesc(flags | libvirt.VIR_DOMAIN_XML_SECURE)
            return with_listen(secure, console_address(target.uri))

        xml = self._call(source, xml_of, f"domain {uuid}")
        if xml is not None:
            self._call(target, lambda c: None if self._find_domain(c, uuid) else c.defineXML(xml))
        self.undefine(source, uuid)

    def defined_on(self, host: HostRef, uuid: str) -> bool:
        """True when the host is reachable and has the domain defined."""
        try:
            return self.state(host, uuid) is not None
        except DriverError:
            return False


__all__ = ["DriverError", "HostInfo", "HostRef", "LibvirtDriver", "NotFound", "detect_virt_type"]
