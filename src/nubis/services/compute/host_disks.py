"""An instance's files on hosts that share no disk directory: what a migration puts
on the target before the instance moves, and takes from the host it left.

The files are the instance's volumes of the host's disk pool (``volume_names``: root
disk, seed disc, their markers, a resize's backup); a root disk on a storage pool
(``root_volumes.py``) is no file of the host and is not copied. The root disk of a linked clone
names the image's copy in the same pool as its backing file: that copy is made on
the target first (once per host, as for a boot), so the root disk's header stays
valid there byte for byte.
"""

from __future__ import annotations

import logging

from nubis.db.models import Image, Instance
from nubis.drivers.errors import DriverError
from nubis.drivers.libvirt.compute import HostRef
from nubis.services.compute.instance_tasks import InstanceTasks, root_volume_name, volume_names
from nubis.services.storage.volumes import ROOT_TARGET

log = logging.getLogger(__name__)


def _backing_on(t: InstanceTasks, ref: HostRef, instance_id: str) -> tuple[str, str] | None:
    """The image copy the instance's root disk is a linked clone of, made on the host
    if missing (path, format); None when the root disk names no backing file."""
    with t.db.read() as s:
        inst = s.get(Instance, instance_id)
        image = s.get(Image, inst.image_id) if inst is not None and inst.image_id else None
        if image is not None:
            s.expunge(image)
    if inst is None or image is None or inst.clone_mode != "linked":
        return None
    if image.disk_format == "iso":  # a blank disk, installed from the disc
        return None
    return t.ensure_image_copy(ref, image), image.disk_format or "qcow2"


def _present(t: InstanceTasks, ref: HostRef, instance_id: str) -> list[str]:
    return [n for n in volume_names(instance_id) if t.driver.volume_path(ref, n) is not None]


def prepare_live(
    t: InstanceTasks, source: HostRef, target: HostRef, instance_id: str
) -> tuple[str, ...]:
    """Before a live migration: on the target, the root disk made empty with the same
    size and backing file (the migration fills it with what the guest wrote), the
    instance's other files copied. Returns the disks the migration copies."""
    root = root_volume_name(instance_id)
    if t.root_on(source, instance_id) == "":  # a volume of a pool both hosts reach
        for name in _present(t, source, instance_id):
            t.driver.copy_to_host(source, target, name)
        return ()
    capacity = t.driver.volume_capacity(source, root)
    if capacity is None:
        raise LookupError("the instance's root disk is missing on its host")
    backing = _backing_on(t, target, instance_id)
    t.driver.delete_volume(target, root)  # what an earlier, failed try left
    t.driver.create_disk(target, root, capacity, backing)
    for name in _present(t, source, instance_id):
        if name != root:
            t.driver.copy_to_host(source, target, name)
    return (ROOT_TARGET,)


def copy_cold(t: InstanceTasks, source: HostRef, target: HostRef, instance_id: str) -> None:
    """Before a cold migration: every file of the instance copied to the target."""
    if t.root_on(source, instance_id) != "":  # its root disk is a file, not a volume
        _backing_on(t, target, instance_id)
    for name in _present(t, source, instance_id):
        t.driver.copy_to_host(source, target, name)


def remove(t: InstanceTasks, ref: HostRef, instance_id: str) -> None:
    """The instance's files leave a host it no longer runs on (an unreachable host
    keeps them: logged)."""
    try:
        t.delete_volumes(ref, instance_id)
    except DriverError as exc:
        log.warning("the files of %s stay on %s: %s", instance_id, ref.uri, exc)
