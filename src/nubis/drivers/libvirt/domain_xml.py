"""Domain XML from a typed description of the VM, and back (never string templates)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

NUBIS_NS = "https://nubis.dev/xmlns/instance/1"
ET.register_namespace("nubis", NUBIS_NS)


@dataclass(frozen=True)
class NetworkDisk:
    """A disk QEMU reaches over the network itself (librbd, libiscsi: no kernel
    mapping, no kernel initiator); the disk's ``path`` is then the image as ``<ceph
    pool>/<image>``, or the LUN as ``<target IQN>/<lun>``."""

    hosts: tuple[tuple[str, int], ...]  # each Ceph monitor, or the iSCSI portal
    auth_user: str  # the cephx user, or CHAP's ("": no CHAP)
    secret_uuid: str  # the libvirt secret holding its key
    protocol: str = "rbd"  # rbd | iscsi
    initiator: str | None = None  # iscsi: the IQN QEMU logs in as

    @property
    def secret_type(self) -> str:
        return "ceph" if self.protocol == "rbd" else "iscsi"


@dataclass(frozen=True)
class DiskSpec:
    path: str  # "" for a CD-ROM drive with no medium
    format: str = "qcow2"  # qcow2 | raw
    target: str = "vda"
    bus: str = "virtio"
    device: str = "disk"  # disk | cdrom
    boot_order: int | None = None
    readonly: bool = False
    serial: str | None = None  # what the guest sees in /sys/block/<dev>/serial
    shareable: bool = False  # several domains may have it attached (multi-attach)
    transient: bool = False  # changes go to an overlay discarded at power off
    network: NetworkDisk | None = None  # an RBD image rather than a file or device


@dataclass(frozen=True)
class Rate:
    """A traffic limit as libvirt's ``<bandwidth>`` has it: average and peak in
    KiB/s, burst in KiB (how much may pass at peak speed)."""

    average: int
    peak: int | None = None
    burst: int | None = None


@dataclass(frozen=True)
class InterfaceSpec:
    """A NIC on a libvirt network (one port of the instance)."""

    mac: str
    network: str  # the libvirt network's name
    model: str = "virtio"
    filter: str | None = None  # the nwfilter applied to the NIC's traffic
    filter_params: tuple[tuple[str, str], ...] = ()  # its variables (IP=...)
    inbound: Rate | None = None  # traffic to the guest
    outbound: Rate | None = None  # traffic from the guest


@dataclass(frozen=True)
class DomainSpec:
    name: str
    uuid: str
    vcpus: int
    memory_mib: int
    virt_type: str = "qemu"  # kvm | qemu
    arch: str = "x86_64"
    title: str | None = None
    disks: tuple[DiskSpec, ...] = ()
    interfaces: tuple[InterfaceSpec, ...] = ()
    console_log: str | None = None
    vnc_listen: str = "127.0.0.1"
    vnc_password: str | None = None  # without one, anybody reaching the port is in
    metadata: dict[str, str] = field(default_factory=dict)


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, {k.rstrip("_"): v for k, v in attrs.items()})
    if text is not None:
        el.text = text
    return el


def disk_xml(disk: DiskSpec) -> str:
    """One ``<disk>`` element, for hot-plug."""
    holder = ET.Element("devices")
    _disk(holder, disk)
    return ET.tostring(holder[0], encoding="unicode")


def _disk(devices: ET.Element, disk: DiskSpec) -> None:
    block = disk.path.startswith("/dev/")  # a logical volume or another block device
    kind = "network" if disk.network else "block" if block else "file"
    el = _sub(devices, "disk", type=kind, device=disk.device)
    driver = _sub(el, "driver", name="qemu", type=disk.format)
    if disk.device == "disk":
        # no host page cache: the only mode in which live migration over shared
        # storage is safe (libvirt refuses it otherwise)
        driver.set("cache", "none")
    if not disk.path:
        pass  # an empty drive (a CD-ROM with its tray open or no disc)
    elif disk.network:
        net = disk.network
        source = _sub(el, "source", protocol=net.protocol, name=disk.path)
        for address, port in net.hosts:
            _sub(source, "host", name=address, port=str(port))
        if net.initiator:
            _sub(_sub(source, "initiator"), "iqn", name=net.initiator)
        if net.auth_user:
            auth = _sub(source, "auth", username=net.auth_user)
            _sub(auth, "secret", type=net.secret_type, uuid=net.secret_uuid)
    elif block:
        _sub(el, "source", dev=disk.path)
    else:
        _sub(el, "source", file=disk.path)
    _sub(el, "target", dev=disk.target, bus=disk.bus)
    if disk.boot_order is not None:
        _sub(el, "boot", order=str(disk.boot_order))
    if disk.readonly:
        _sub(el, "readonly")
    if disk.shareable:
        _sub(el, "shareable")
    if disk.transient:
        _sub(el, "transient")
    if disk.serial:
        _sub(el, "serial", disk.serial)


def interface_xml(nic: InterfaceSpec) -> str:
    """One ``<interface>`` element, for hot-plug."""
    holder = ET.Element("devices")
    _interface(holder, nic)
    return ET.tostring(holder[0], encoding="unicode")


def _interface(devices: ET.Element, nic: InterfaceSpec) -> None:
    el = _sub(devices, "interface", type="network")
    _sub(el, "mac", address=nic.mac)
    _sub(el, "source", network=nic.network)
    _sub(el, "model", type=nic.model)
    if nic.filter:
        ref = _sub(el, "filterref", filter=nic.filter)
        for name, value in nic.filter_params:
            _sub(ref, "parameter", name=name, value=value)
    if nic.inbound or nic.outbound:
        bandwidth = _sub(el, "bandwidth")
        for tag, rate in (("inbound", nic.inbound), ("outbound", nic.outbound)):
            if rate is not None:
                attrs = {"average": rate.average, "peak": rate.peak, "burst": rate.burst}
                _sub(bandwidth, tag, **{k: str(v) for k, v in attrs.items() if v is not None})


def _rate(el: ET.Element | None) -> Rate | None:
    if el is None:
        return None
    peak, burst = el.get("peak"), el.get("burst")
    return Rate(
        int(el.get("average", "0")),
        int(peak) if peak else None,
        int(burst) if burst else None,
    )


def build_domain_xml(spec: DomainSpec) -> str:
    if spec.virt_type not in ("kvm", "qemu"):
        raise ValueError(f"unknown virtualization type {spec.virt_type!r}")
    dom = ET.Element("domain", type=spec.virt_type)
    _sub(dom, "name", spec.name)
    _sub(dom, "uuid", spec.uuid)
    if spec.title:
        _sub(dom, "title", spec.title)
    if spec.metadata:
        meta = _sub(dom, "metadata")
        inst = _sub(meta, f"{{{NUBIS_NS}}}instance")
        for key, value in sorted(spec.metadata.items()):
            _sub(inst, f"{{{NUBIS_NS}}}{key}", value)
    _sub(dom, "memory", str(spec.memory_mib), unit="MiB")
    _sub(dom, "vcpu", str(spec.vcpus))
    os_el = _sub(dom, "os")
    _sub(os_el, "type", "hvm", arch=spec.arch, machine="pc")
    features = _sub(dom, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    if spec.virt_type == "kvm":
        _sub(dom, "cpu", mode="host-model")
    _sub(dom, "clock", offset="utc")
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    _sub(dom, "on_crash", "destroy")
    devices = _sub(dom, "devices")
    for disk in spec.disks:
        _disk(devices, disk)
    for nic in spec.interfaces:
        _interface(devices, nic)
    serial = _sub(devices, "serial", type="pty")
    if spec.console_log:
        _sub(serial, "log", file=spec.console_log, append="on")
    _sub(serial, "target", port="0")
    console = _sub(devices, "console", type="pty")
    _sub(console, "target", type="serial", port="0")
    graphics = _sub(
        devices, "graphics", type="vnc", port="-1", autoport="yes", listen=spec.vnc_listen
    )
    if spec.vnc_password:
        graphics.set("passwd", spec.vnc_password)
    video = _sub(devices, "video")
    _sub(video, "model", type="vga")
    _sub(devices, "memballoon", model="virtio")
    return ET.tostring(dom, encoding="unicode")


def _memory_mib(el: ET.Element) -> int:
    units = {"KiB": 1 / 1024, "k": 1 / 1024, "MiB": 1, "M": 1, "GiB": 1024, "G": 1024}
    return int(int(el.text or 0) * units[el.get("unit", "KiB")])


def _attr(el: ET.Element, path: str, name: str) -> str:
    found = el.find(path)
    return "" if found is None else found.get(name, "")


def disk_source_path(source: ET.Element | None) -> str:
    """A ``<disk>``'s source: its file, its device, or its network image's name."""
    if source is None:
        return ""
    return source.get("file") or source.get("dev") or source.get("name") or ""


def _network_disk(el: ET.Element) -> NetworkDisk | None:
    source = el.find("source")
    if el.get("type") != "network" or source is None:
        return None
    return NetworkDisk(
        hosts=tuple((h.get("name", ""), int(h.get("port", "0"))) for h in source.findall("host")),
        auth_user=_attr(source, "auth", "username"),
        secret_uuid=_attr(source, "auth/secret", "uuid"),
        protocol=source.get("protocol", "rbd"),
        initiator=_attr(source, "initiator/iqn", "name") or None,
    )


def parse_domain_xml(xml: str) -> DomainSpec:
    """Read back the parts of a domain Nubis describes (also from libvirt's XMLDesc)."""
    dom = ET.fromstring(xml)
    disks = []
    for el in dom.findall("./devices/disk"):
        driver, source, target = el.find("driver"), el.find("source"), el.find("target")
        boot = el.find("boot")
        disks.append(
            DiskSpec(
                path=disk_source_path(source),
                format=driver.get("type", "raw") if driver is not None else "raw",
                target=target.get("dev", "") if target is not None else "",
                bus=target.get("bus", "") if target is not None else "",
                device=el.get("device", "disk"),
                boot_order=int(boot.get("order", 0)) if boot is not None else None,
                readonly=el.find("readonly") is not None,
                serial=el.findtext("serial"),
                shareable=el.find("shareable") is not None,
                transient=el.find("transient") is not None,
                network=_network_disk(el),
            )
        )
    interfaces = tuple(
        InterfaceSpec(
            mac=_attr(el, "mac", "address"),
            network=_attr(el, "source", "network"),
            model=_attr(el, "model", "type"),
            filter=_attr(el, "filterref", "filter") or None,
            filter_params=tuple(
                (p.get("name", ""), p.get("value", "")) for p in el.findall("filterref/parameter")
            ),
            inbound=_rate(el.find("bandwidth/inbound")),
            outbound=_rate(el.find("bandwidth/outbound")),
        )
        for el in dom.findall("./devices/interface[@type='network']")
    )
    log = dom.find("./devices/serial/log")
    graphics = dom.find("./devices/graphics")
    meta = dom.find(f"./metadata/{{{NUBIS_NS}}}instance")
    metadata = {}
    if meta is not None:
        metadata = {child.tag.split("}")[1]: child.text or "" for child in meta}
    os_type = dom.find("./os/type")
    return DomainSpec(
        name=dom.findtext("name", ""),
        uuid=dom.findtext("uuid", ""),
        vcpus=int(dom.findtext("vcpu", "1")),
        memory_mib=_memory_mib(dom.find("memory")),  # type: ignore[arg-type]
        virt_type=dom.get("type", "qemu"),
        arch=os_type.get("arch", "x86_64") if os_type is not None else "x86_64",
        title=dom.findtext("title"),
        disks=tuple(disks),
        interfaces=interfaces,
        console_log=log.get("file") if log is not None else None,
        vnc_listen=graphics.get("listen", "") if graphics is not None else "",
        metadata=metadata,
    )
