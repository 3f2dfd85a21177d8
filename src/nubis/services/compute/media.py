"""The CD-ROM drive and the boot order of instances.

Every instance has an IDE CD-ROM drive. Inserting an ISO image copies it to the
instance's host once (like any image) and puts it in the drive, live when the
instance runs; ejecting empties the drive. The boot order (``disk``, ``cdrom``)
is kept in the domain's definition and applies from the next power-on: the
installer flow boots from an ISO onto a blank disk, then puts the disk first and
ejects the ISO.

The disc is recorded on the instance as soon as an insert is accepted, so the
image cannot be deleted while it is on its way into the drive; a failed insert
puts back the disc that was there before.
"""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.orm import Session

from nubis.db.models import Image, ImageStatus, Instance, InstanceStatus, Task
from nubis.services.compute.instance_tasks import (
    BOOT_DEVICES,
    CDROM_TARGET,
    InstanceTasks,
    boot_targets,
)
from nubis.services.compute.instances import InstanceService
from nubis.services.core.errors import BadRequest, Conflict
from nubis.services.core.guard import claim
from nubis.services.core.principal import Principal
from nubis.services.core.submit import submit_task
from nubis.services.storage import images
from nubis.tasks.engine import TaskContext

CHANGEABLE = (InstanceStatus.RUNNING, InstanceStatus.PAUSED, InstanceStatus.STOPPED)


def request_insert(
    instances: InstanceService, session: Session, principal: Principal, ref: str, image_ref: str
) -> Task:
    instance = instances.get(session, principal, ref)
    image = images.get_visible(session, principal, image_ref)
    if image.status != ImageStatus.ACTIVE:
        raise Conflict(f"image {image.name!r} is {image.status}, not active")
    if image.disk_format != "iso":
        raise BadRequest(
            f"image {image.name!r} is a {image.disk_format} disk image: only ISO images "
            "go into the CD-ROM drive"
        )
    previous = instance.cdrom_image_id
    claim(session, instance, CHANGEABLE, "changing-media", "instance")
    instance.cdrom_image_id = image.id
    return submit_task(
        instances.engine,
        session,
        principal,
        "instance.cdrom",
        "instance",
        instance.id,
        params={"image_id": image.id, "previous_image_id": previous},
    )


def request_eject(
    instances: InstanceService, session: Session, principal: Principal, ref: str
) -> Task:
    instance = instances.get(session, principal, ref)
    if instance.cdrom_image_id is None:
        raise Conflict(f"the CD-ROM drive of {instance.name!r} is empty")
    previous = instance.cdrom_image_id
    claim(session, instance, CHANGEABLE, "changing-media", "instance")
    return submit_task(
        instances.engine,
        session,
        principal,
        "instance.cdrom",
        "instance",
        instance.id,
        params={"image_id": None, "previous_image_id": previous},
    )


def check_boot_order(order: object) -> str:
    """``["cdrom", "disk"]`` -> ``"cdrom,disk"``; anything else is refused."""
    names = ", ".join(BOOT_DEVICES)
    if (
        not isinstance(order, list)
        or not order
        or not all(isinstance(d, str) and d in BOOT_DEVICES for d in order)
    ):
        raise BadRequest(f"order must be a non-empty list of boot devices: {names}")
    if len(set(order)) != len(order):
        raise BadRequest("order names a boot device twice")
    return ",".join(order)


def request_boot_order(
    instances: InstanceService, session: Session, principal: Principal, ref: str, order: object
) -> Task:
    boot_order = check_boot_order(order)
    instance = instances.get(session, principal, ref)
    claim(session, instance, CHANGEABLE, "reordering", "instance")
    return submit_task(
        instances.engine,
        session,
        principal,
        "instance.boot-order",
        "instance",
        instance.id,
        params={"order": boot_order},
    )


class MediaHandler:
    """Insert (``image_id``) or eject (``image_id`` None) the disc of the CD-ROM drive."""

    kind = "instance.cdrom"
    steps = ("copy", "media")
    resumable = True  # copying the image and changing the medium are both idempotent

    def __init__(self, tasks: InstanceTasks) -> None:
        self.t = tasks

    def run(self, ctx: TaskContext) -> None:
        loaded = self.t.load(ctx.resource_id)
        image_id = ctx.params["image_id"]
        path = None
        if image_id is not None:
            with self.t.db.begin() as s:
                image = s.get(Image, image_id)
                if image is None:
                    raise LookupError("the ISO image was deleted")
            ctx.step("copy", 10)
            path = self.t.ensure_image_copy(loaded.ref, image)
        ctx.step("media", 70)
        self.t.driver.change_media(loaded.ref, ctx.resource_id, CDROM_TARGET, path)
        with self.t.db.begin() as s:
            s.execute(
                update(Instance)
                .where(Instance.id == ctx.resource_id)
                .values(cdrom_image_id=image_id, task_state=None)
            )

    def failed(self, ctx: TaskContext, error: str) -> None:
        with self.t.db.begin() as s:
            s.execute(
                update(Instance)
                .where(Instance.id == ctx.resource_id)
                .values(cdrom_image_id=ctx.params["previous_image_id"])
            )
        self.t.reconcile(ctx.resource_id)


class BootOrderHandler:
    kind = "instance.boot-order"
    steps = ("define",)
    resumable = True

    def __init__(self, tasks: InstanceTasks) -> None:
        self.t = tasks

    def run(self, ctx: TaskContext) -> None:
        loaded = self.t.load(ctx.resource_id)
        order = ctx.params["order"]
        ctx.step("define", 50)
        self.t.driver.set_boot_order(loaded.ref, ctx.resource_id, boot_targets(order))
        with self.t.db.begin() as s:
            s.execute(
                update(Instance)
                .where(Instance.id == ctx.resource_id)
                .values(boot_order=order, task_state=None)
            )

    def failed(self, ctx: TaskContext, error: str) -> None:
        self.t.reconcile(ctx.resource_id)
