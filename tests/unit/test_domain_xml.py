import xml.etree.ElementTree as ET

import pytest

from nubis.drivers.libvirt.domain_xml import (
    DiskSpec,
    DomainSpec,
    NetworkDisk,
    build_domain_xml,
    parse_domain_xml,
)


def spec(**kw) -> DomainSpec:
    base = dict(
        name="nubis-1234",
        uuid="8f1e4c1a-0000-4000-8000-000000000001",
        vcpus=2,
        memory_mib=256,
        virt_type="qemu",
        title="web-1",
        disks=(DiskSpec(path="/pool/nubis-1234-root", boot_order=1),),
        console_log="/console/nubis-1234.log",
        metadata={"instance": "8f1e", "project": "p1"},
    )
    base.update(kw)
    return DomainSpec(**base)


def test_round_trip_keeps_every_field():
    original = spec()
    assert parse_domain_xml(build_domain_xml(original)) == original


def test_qemu_domain_has_no_host_cpu_passthrough_and_kvm_has():
    assert ET.fromstring(build_domain_xml(spec())).find("cpu") is None
    cpu = ET.fromstring(build_domain_xml(spec(virt_type="kvm"))).find("cpu")
    assert cpu is not None and cpu.get("mode") == "host-model"


def test_vnc_listens_on_loopback_only():
    graphics = ET.fromstring(build_domain_xml(spec())).find("./devices/graphics")
    assert graphics.get("listen") == "127.0.0.1"


def test_serial_console_is_logged_to_file():
    log = ET.fromstring(build_domain_xml(spec())).find("./devices/serial/log")
    assert log.get("file") == "/console/nubis-1234.log"
    assert log.get("append") == "on"


def test_names_with_xml_metacharacters_are_escaped_not_injected():
    xml = build_domain_xml(spec(title="a<b>&'\"</title><evil/>"))
    root = ET.fromstring(xml)
    assert root.findtext("title") == "a<b>&'\"</title><evil/>"
    assert root.find("evil") is None


def test_unknown_virt_type_is_refused():
    with pytest.raises(ValueError):
        build_domain_xml(spec(virt_type="xen"))


def test_memory_units_are_parsed():
    xml = build_domain_xml(spec()).replace('<memory unit="MiB">256', '<memory unit="KiB">262144')
    assert parse_domain_xml(xml).memory_mib == 256


def test_disks_bypass_the_host_cache_so_live_migration_is_safe():
    disks = spec(
        disks=(
            DiskSpec(path="/p/root"),
            DiskSpec(
                path="/p/x.iso",
                device="cdrom",
                bus="ide",
                target="hdc",
                format="raw",
                readonly=True,
            ),
        )
    )
    drivers = ET.fromstring(build_domain_xml(disks)).findall("./devices/disk/driver")
    assert [d.get("cache") for d in drivers] == ["none", None]


def test_an_empty_cdrom_drive_has_no_source_and_round_trips():
    drive = DiskSpec(path="", device="cdrom", bus="ide", target="hdc", format="raw", readonly=True)
    original = spec(disks=(DiskSpec(path="/p/root", boot_order=1), drive))
    xml = build_domain_xml(original)
    cdrom = ET.fromstring(xml).find("./devices/disk[@device='cdrom']")
    assert cdrom.find("source") is None and cdrom.find("readonly") is not None
    assert parse_domain_xml(xml) == original


def test_an_rbd_disk_names_its_image_monitors_and_secret_and_round_trips():
    ceph = NetworkDisk(
        hosts=(("10.0.0.11", 6789), ("mon2.example", 3300)),
        auth_user="nubis",
        secret_uuid="0b7c1f5e-0000-4000-8000-000000000009",
    )
    data = DiskSpec(path="nubis/nubis-vol-1.img", format="raw", target="vdb", network=ceph)
    original = spec(disks=(DiskSpec(path="/p/root", boot_order=1), data))
    xml = build_domain_xml(original)
    disk = ET.fromstring(xml).find("./devices/disk[@type='network']")
    source = disk.find("source")
    assert (source.get("protocol"), source.get("name")) == ("rbd", "nubis/nubis-vol-1.img")
    assert [(h.get("name"), h.get("port")) for h in source.findall("host")] == [
        ("10.0.0.11", "6789"),
        ("mon2.example", "3300"),
    ]
    assert source.find("auth").get("username") == "nubis"
    secret = source.find("auth/secret")
    assert (secret.get("type"), secret.get("uuid")) == ("ceph", ceph.secret_uuid)
    assert disk.find("driver").get("type") == "raw"
    assert parse_domain_xml(xml) == original


def test_an_iscsi_lun_names_its_portal_and_initiator_and_round_trips():
    lun = NetworkDisk(
        hosts=(("10.0.0.20", 3260),),
        auth_user="",  # no CHAP: no <auth>
        secret_uuid="",
        protocol="iscsi",
        initiator="iqn.2026-12.org.nubis:pool-1",
    )
    data = DiskSpec(path="iqn.2026-12.org.example:t1/1", format="raw", target="vdb", network=lun)
    original = spec(disks=(DiskSpec(path="/p/root", boot_order=1), data))
    xml = build_domain_xml(original)
    source = ET.fromstring(xml).find("./devices/disk[@type='network']/source")
    assert (source.get("protocol"), source.get("name")) == ("iscsi", data.path)
    assert source.find("initiator/iqn").get("name") == lun.initiator
    assert source.find("auth") is None
    assert parse_domain_xml(xml) == original
    chap = DiskSpec(
        path=data.path,
        format="raw",
        target="vdc",
        network=NetworkDisk(lun.hosts, "user", "0b7c1f5e-0000-4000-8000-00000000000a", "iscsi"),
    )
    auth = ET.fromstring(build_domain_xml(spec(disks=(chap,)))).find(".//source/auth")
    assert auth.get("username") == "user" and auth.find("secret").get("type") == "iscsi"


def test_vnc_listens_on_the_management_address_with_a_password():
    from nubis.drivers.errors import DriverError
    from nubis.drivers.libvirt.console import console_address, with_listen

    assert console_address("qemu:///system") == "127.0.0.1"
    assert console_address("qemu+ssh://root@10.0.0.5/system") == "10.0.0.5"
    assert console_address("qemu+tcp://kvm7.mgmt.example/system") == "kvm7.mgmt.example"
    for wildcard in ("qemu+tcp://0.0.0.0/system", "qemu+tcp://[::]/system"):
        with pytest.raises(DriverError):
            console_address(wildcard)
    xml = build_domain_xml(spec(vnc_listen="10.0.0.5", vnc_password="s3cret12"))
    graphics = ET.fromstring(xml).find("./devices/graphics")
    assert graphics.get("listen") == "10.0.0.5" and graphics.get("passwd") == "s3cret12"
    moved = ET.fromstring(with_listen(xml, "10.0.0.6")).find("./devices/graphics")
    assert moved.get("listen") == "10.0.0.6" and moved.get("passwd") == "s3cret12"
