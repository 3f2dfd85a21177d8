"""A new volume never shows a former tenant's bytes. On a directory pool a new file
reads zeros; on a block pool (LVM) the space of a deleted volume comes back with
its bytes, so a volume that reserves its space is zeroed before anyone gets it.

This machine has no device-mapper, so LVM itself cannot run here: the driver runs
against libvirt's test driver (a real libvirt, in memory) with a ``logical`` pool,
and the zeroing it asks libvirt for is recorded (that driver has no wipe)."""

import libvirt
import pytest

from nubis.drivers.libvirt.base import HostRef
from nubis.drivers.libvirt.connection import ConnectionPool
from nubis.drivers.libvirt.volumes import PoolSpec, VolumeDriver, zero_on_create

MIB = 1024 * 1024


@pytest.mark.parametrize(
    "pool_type,provisioning,zeroed",
    [
        ("dir", "thin", False),  # a sparse file reads zeros
        ("dir", "thick-lazy-zeroed", False),  # fallocate'd space reads zeros
        ("dir", "thick", True),  # eager-zeroed by definition
        ("netfs", "thick-lazy-zeroed", False),
        ("logical", "thin", False),  # a sparse LV over the zero device
        ("logical", "thick-lazy-zeroed", True),  # a plain LV: a former one's extents
        ("logical", "thick", True),
    ],
)
def test_which_volumes_are_zeroed_when_made(pool_type, provisioning, zeroed):
    assert zero_on_create(pool_type, provisioning) is zeroed


def test_a_reserved_volume_on_a_block_pool_is_zeroed_before_use(monkeypatch):
    wiped: list[str] = []
    monkeypatch.setattr(
        libvirt.virStorageVol, "wipe", lambda vol, flags=0: wiped.append(vol.name()) or 0
    )
    driver = VolumeDriver(ConnectionPool())
    host = HostRef("test:///default")
    spec = PoolSpec("vg-remanence", "logical", "/dev/vg-remanence", source_name="vg-remanence")
    driver.ensure_pool(host, spec)
    try:
        for name, provisioning in (
            ("lazy", "thick-lazy-zeroed"),
            ("eager", "thick"),
            ("sparse", "thin"),
        ):
            driver.create_volume(host, spec.name, name, 4 * MIB, "raw", provisioning)
        assert wiped == ["lazy", "eager"]
    finally:
        for name in ("lazy", "eager", "sparse"):
            driver.delete_volume(host, spec.name, name)
        driver.remove_pool(host, spec.name)
