"""Templates: an image made from a stopped instance's root disk.

The disk is flattened into a temporary volume on the instance's host (qemu-img
convert, through libvirt), streamed into the image store's staging area, then
registered as an image like an upload. New instances can boot from it, as linked
clones (the default) or full copies. The instance is held (``templating``) until
the image is made, so it cannot start and change the disk mid-copy.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from nubis.db.models import Task, new_id
from nubis.drivers.errors import DriverError
from nubis.services.auth import Principal
from nubis.services.images import ImageService, Staged
from nubis.services.instance_tasks import InstanceTasks, root_volume_name
from nubis.services.instances import InstanceService
from nubis.tasks.engine import TaskContext


def request_template(
    instances: InstanceService,
    images: ImageService,
    session: Session,
    principal: Principal,
    ref: str,
    name: str,
) -> Task:
    images.check_name(session, name)
    instance = instances.get(session, principal, ref)
    instances.guard(session, instance, ("stopped",), "templating")
    return instances.submit(
        session,
        principal,
        "instance.template",
        instance.id,
        params={"name": name, "image_id": new_id(), "project_id": principal.project_id},
    )


class TemplateHandler:
    kind = "instance.template"
    resumable = True  # every run starts the copy afresh

    def __init__(self, tasks: InstanceTasks) -> None:
        self.t = tasks

    def _temp(self, ctx: TaskContext) -> str:
        return f"nubis-tmpl-{ctx.params['image_id']}"

    def _staged(self, ctx: TaskContext) -> Staged:
        image_id = ctx.params["image_id"]
        return Staged(image_id, self.t.images.store / f"{image_id}.partial")

    def run(self, ctx: TaskContext) -> None:
        loaded = self.t.load(ctx.resource_id)
        ref, temp = loaded.ref, self._temp(ctx)
        ctx.step("flatten", 10)
        root = self.t.driver.volume_path(ref, root_volume_name(ctx.resource_id))
        if root is None:
            raise DriverError("the instance's root disk is missing")
        self.t.driver.copy_disk(ref, temp, root, 0)
        try:
            ctx.step("download", 40)
            staged = self._staged(ctx)
            with open(staged.path, "wb") as fh:

                def write(data: bytes) -> None:
                    staged.digest.update(data)
                    fh.write(data)

                self.t.driver.download(ref, temp, write, lambda p: ctx.progress(40 + p // 2))
            ctx.step("register", 95)
            with self.t.db.begin() as s:
                self.t.images.register(s, ctx.params["name"], staged, ctx.params["project_id"])
        finally:
            self.t.driver.delete_volume(ref, temp)
        self.t.settle(ctx.resource_id, "stopped")

    def failed(self, ctx: TaskContext, error: str) -> None:
        self._staged(ctx).path.unlink(missing_ok=True)
        try:
            self.t.driver.delete_volume(self.t.load(ctx.resource_id).ref, self._temp(ctx))
        except (DriverError, LookupError):
            pass
        self.t.reconcile(ctx.resource_id)
