"""Instances: create, list, show, delete, power actions, migration, console log."""

from __future__ import annotations

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse

from nubis.api.deps import PageDep, PlatformDep, PrincipalDep
from nubis.api.network_schemas import PortAccepted, PortOut
from nubis.api.routers.ports import port_out
from nubis.api.schemas import (
    BootOrderIn,
    CdromIn,
    CloneIn,
    InstanceAccepted,
    InstanceHaIn,
    InstanceIn,
    InstanceOut,
    MigrateIn,
    NicIn,
    PageOut,
    ResizeIn,
    TaskAccepted,
    TemplateIn,
    bandwidth_dict,
)
from nubis.services.compute import media, migration, resize, templates
from nubis.services.compute.cloudinit import GuestRequest
from nubis.services.compute.instances import InstanceRequest
from nubis.services.network.ports import NicRequest, instance_ports

router = APIRouter(prefix="/instances", tags=["instances"])


@router.get("")
def list_instances(
    platform: PlatformDep,
    principal: PrincipalDep,
    pages: PageDep,
    name: str | None = None,
    status: str | None = None,
    name_contains: str | None = Query(default=None, max_length=64),
) -> PageOut[InstanceOut]:
    """Instances of the caller's project; ``sort`` by name, status or created_at."""
    with platform.db.read() as s:
        page = platform.instances.find_all(s, principal, name, status, pages, name_contains)
        return PageOut.of(page, InstanceOut)


@router.post("", status_code=202)
def create_instance(
    body: InstanceIn, platform: PlatformDep, principal: PrincipalDep
) -> InstanceAccepted:
    with platform.db.begin() as s:
        request = InstanceRequest(
            name=body.name,
            image=body.image,
            flavor=body.flavor,
            host=body.host,
            rule_group=body.rule_group,
            cluster=body.cluster,
            clone=body.clone,
            nics=None
            if body.networks is None
            else [
                NicRequest(n.network, n.ip, n.security_groups, bandwidth_dict(n.bandwidth))
                for n in body.networks
            ],
            guest=GuestRequest(body.hostname, body.key_pair, body.user_data, body.seed_format),
            ha=body.ha,
            ha_priority=body.ha_priority,
            properties=body.properties,
            root_pool=body.root_pool,
            root_offering=body.root_offering,
        )
        instance, task = platform.instances.create(s, principal, request)
        out = InstanceOut.model_validate(instance).model_dump()
    return InstanceAccepted(**out, task_id=task.id)


@router.get("/{ref}")
def get_instance(ref: str, platform: PlatformDep, principal: PrincipalDep) -> InstanceOut:
    with platform.db.read() as s:
        return InstanceOut.model_validate(platform.instances.get(s, principal, ref))


@router.get("/{ref}/ports")
def list_instance_ports(ref: str, platform: PlatformDep, principal: PrincipalDep) -> list[PortOut]:
    """The instance's NICs in order (eth0 first): MAC and fixed IP of each."""
    with platform.db.read() as s:
        instance = platform.instances.get(s, principal, ref)
        return [port_out(s, p) for p in instance_ports(s, instance.id)]


@router.post("/{ref}/ports", status_code=202)
def attach_nic(
    ref: str, body: NicIn, platform: PlatformDep, principal: PrincipalDep
) -> PortAccepted:
    """A new NIC on a network, hot-plugged when the instance runs; the port (MAC,
    address) is in the answer, the task plugs it in."""
    nic = NicRequest(body.network, body.ip, body.security_groups, bandwidth_dict(body.bandwidth))
    with platform.db.begin() as s:
        port, task = platform.nics.request_attach(s, principal, ref, nic)
        out = port_out(s, port).model_dump()
    return PortAccepted(**out, task_id=task.id)


@router.delete("/{ref}/ports/{port_id}", status_code=202)
def detach_nic(
    ref: str, port_id: str, platform: PlatformDep, principal: PrincipalDep
) -> TaskAccepted:
    """Unplug the NIC (the guest is asked to let it go) and free its address."""
    with platform.db.begin() as s:
        task = platform.nics.request_detach(s, principal, ref, port_id)
        return TaskAccepted(task_id=task.id)


@router.delete("/{ref}", status_code=202)
def delete_instance(ref: str, platform: PlatformDep, principal: PrincipalDep) -> InstanceAccepted:
    with platform.db.begin() as s:
        instance, task = platform.instances.delete(s, principal, ref)
        out = InstanceOut.model_validate(instance).model_dump()
    return InstanceAccepted(**out, task_id=task.id)


@router.post("/{ref}/actions/migrate", status_code=202)
def migrate_instance(
    ref: str, platform: PlatformDep, principal: PrincipalDep, body: MigrateIn | None = None
) -> TaskAccepted:
    """Live-migrate a running (or paused) instance, cold-migrate a stopped one, to
    ``host`` or to the host the scheduler picks in the same cluster."""
    body = body or MigrateIn()
    downtime = body.max_downtime_ms
    if downtime is None:
        downtime = platform.settings.migration_max_downtime_ms
    bandwidth = body.max_bandwidth_mib_s
    if bandwidth is None:
        bandwidth = platform.settings.migration_max_bandwidth_mib_s
    with platform.db.begin() as s:
        instance = platform.instances.get(s, principal, ref)
        task = migration.request_migration(
            platform.instances, s, principal, instance, body.host, downtime, bandwidth
        )
    return TaskAccepted(task_id=task.id)


@router.post("/{ref}/actions/cancel-migration", status_code=202)
def cancel_migration(ref: str, platform: PlatformDep, principal: PrincipalDep) -> InstanceOut:
    """Abort a live migration in flight: the instance stays on its source host."""
    with platform.db.begin() as s:
        migration.cancel(platform.instances, s, principal, ref)
        return InstanceOut.model_validate(platform.instances.get(s, principal, ref))


@router.post("/{ref}/actions/create-template", status_code=202)
def create_template(
    ref: str, body: TemplateIn, platform: PlatformDep, principal: PrincipalDep
) -> TaskAccepted:
    """Make an image of a stopped instance's root disk (flattened); new instances
    can boot from it as linked or full clones."""
    with platform.db.begin() as s:
        task = templates.request_template(
            platform.instances, platform.images, s, principal, ref, body.name
        )
        return TaskAccepted(task_id=task.id)


@router.post("/{ref}/actions/resize", status_code=202)
def resize_instance(
    ref: str, body: ResizeIn, platform: PlatformDep, principal: PrincipalDep
) -> TaskAccepted:
    """Give a running or stopped instance another flavor on its host (a running one is
    shut down and started again); then confirm-resize or revert-resize."""
    with platform.db.begin() as s:
        task = resize.request_resize(platform.instances, s, principal, ref, body.flavor)
        return TaskAccepted(task_id=task.id)


@router.post("/{ref}/actions/confirm-resize", status_code=202)
def confirm_resize(ref: str, platform: PlatformDep, principal: PrincipalDep) -> TaskAccepted:
    """Keep the new flavor (the copy of the old root disk is removed)."""
    with platform.db.begin() as s:
        task = resize.request_confirm(platform.instances, s, principal, ref)
        return TaskAccepted(task_id=task.id)


@router.post("/{ref}/actions/revert-resize", status_code=202)
def revert_resize(ref: str, platform: PlatformDep, principal: PrincipalDep) -> TaskAccepted:
    """Go back to the flavor (and root disk) the instance had before the resize."""
    with platform.db.begin() as s:
        task = resize.request_revert(platform.instances, s, principal, ref)
        return TaskAccepted(task_id=task.id)


@router.post("/{ref}/actions/clone", status_code=202)
def clone_instance(
    ref: str, body: CloneIn, platform: PlatformDep, principal: PrincipalDep
) -> InstanceAccepted:
    """A full clone of a stopped instance: a new instance on the same host whose root
    disk is a flattened copy of this one's (data volumes are not copied)."""
    with platform.db.begin() as s:
        instance, task = platform.instances.clone(s, principal, ref, body.name)
        out = InstanceOut.model_validate(instance).model_dump()
    return InstanceAccepted(**out, task_id=task.id)


@router.put("/{ref}/cdrom", status_code=202)
def insert_disc(
    ref: str, body: CdromIn, platform: PlatformDep, principal: PrincipalDep
) -> TaskAccepted:
    """Put an ISO image into the instance's CD-ROM drive (at once when it runs)."""
    with platform.db.begin() as s:
        task = media.request_insert(platform.instances, s, principal, ref, body.image)
        return TaskAccepted(task_id=task.id)


@router.delete("/{ref}/cdrom", status_code=202)
def eject_disc(ref: str, platform: PlatformDep, principal: PrincipalDep) -> TaskAccepted:
    """Empty the CD-ROM drive (a running guest's tray lock is overridden)."""
    with platform.db.begin() as s:
        return TaskAccepted(task_id=media.request_eject(platform.instances, s, principal, ref).id)


@router.put("/{ref}/ha")
def set_ha(
    ref: str, body: InstanceHaIn, platform: PlatformDep, principal: PrincipalDep
) -> InstanceOut:
    """High availability on or off, and its restart priority."""
    with platform.db.begin() as s:
        instance = platform.instances.set_ha(s, principal, ref, body.enabled, body.priority)
        return InstanceOut.model_validate(instance)


@router.put("/{ref}/properties")
def set_properties(
    ref: str, body: dict[str, str], platform: PlatformDep, principal: PrincipalDep
) -> InstanceOut:
    """Replace the instance's own key-value pairs (at most 128, 255 characters each)."""
    with platform.db.begin() as s:
        instance = platform.instances.set_properties(s, principal, ref, body)
        return InstanceOut.model_validate(instance)


@router.put("/{ref}/boot-order", status_code=202)
def set_boot_order(
    ref: str, body: BootOrderIn, platform: PlatformDep, principal: PrincipalDep
) -> TaskAccepted:
    """The devices the instance boots from, first to last; applies from its next start."""
    with platform.db.begin() as s:
        task = media.request_boot_order(platform.instances, s, principal, ref, body.order)
        return TaskAccepted(task_id=task.id)


@router.post("/{ref}/actions/{action}", status_code=202)
def instance_action(
    ref: str, action: str, platform: PlatformDep, principal: PrincipalDep
) -> TaskAccepted:
    with platform.db.begin() as s:
        task = platform.instances.action(s, principal, ref, action)
    return TaskAccepted(task_id=task.id)


@router.get("/{ref}/console-log", response_class=PlainTextResponse)
def console_log(
    ref: str,
    platform: PlatformDep,
    principal: PrincipalDep,
    max_bytes: int = Query(default=65536, ge=1, le=16 * 1024 * 1024),
) -> PlainTextResponse:
    """The serial console output of the instance (the last ``max_bytes``)."""
    return PlainTextResponse(platform.instances.console_log(principal, ref, max_bytes))
