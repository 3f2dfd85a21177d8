"""The driver's undefine against libvirt's test driver (in this process): a domain
is destroyed and undefined, and one that someone else removes while the driver works
on it is gone, as was asked, not an error."""

import uuid
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from nubis.drivers.libvirt.base import HostRef
from nubis.drivers.libvirt.compute import LibvirtDriver
from nubis.drivers.libvirt.connection import ConnectionPool

URI = "test:///default"
DOMAIN = (
    "<domain type='test'><name>nubis-{uuid}</name><uuid>{uuid}</uuid>"
    "<memory>65536</memory><os><type>hvm</type></os></domain>"
)


@pytest.fixture
def conn() -> Iterator[libvirt.virConnect]:
    opened = libvirt.open(URI)
    yield opened
    opened.close()


def running_domain(conn: libvirt.virConnect) -> str:
    uid = str(uuid.uuid4())
    conn.defineXML(DOMAIN.format(uuid=uid)).create()
    return uid


def gone(conn: libvirt.virConnect, uid: str) -> bool:
    try:
        conn.lookupByUUIDString(uid)
    except libvirt.libvirtError as exc:
        return exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN
    return False


def driver(tmp_path: Path) -> LibvirtDriver:
    return LibvirtDriver(ConnectionPool(), tmp_path / "disks", tmp_path / "console")


def test_a_running_domain_is_destroyed_and_undefined(tmp_path, conn):
    uid = running_domain(conn)
    driver(tmp_path).undefine(HostRef(URI), uid)
    assert gone(conn, uid)
    driver(tmp_path).undefine(HostRef(URI), uid)  # again: nothing to do


def test_a_domain_removed_by_someone_else_meanwhile_is_gone_as_asked(tmp_path, conn, monkeypatch):
    uid = running_domain(conn)
    drv = driver(tmp_path)
    find = drv._find_domain

    def found_then_removed(c: libvirt.virConnect, u: str) -> libvirt.virDomain | None:
        found = find(c, u)
        assert found is not None
        found.destroy()  # another controller's clean-up, between the look-up and the work
        found.undefine()
        return found

    monkeypatch.setattr(drv, "_find_domain", found_then_removed)
    drv.undefine(HostRef(URI), uid)
    assert gone(conn, uid)
