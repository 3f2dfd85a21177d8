"""Instances: validation, placement, guarded state changes; the work itself runs as tasks.

Every action is a compare-and-swap on ``task_state`` (Nova's idea): it succeeds
only when no other operation is in flight and the status allows it, so two
conflicting requests can never both run; the loser gets 409.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from nubis.db.models import (
    Cluster,
    Flavor,
    Host,
    ImageStatus,
    Instance,
    InstanceStatus,
    Task,
)
from nubis.drivers.errors import DriverError
from nubis.services.compute import cloudinit, keypairs, root_volumes, rule_groups
from nubis.services.compute.cloudinit import GuestRequest
from nubis.services.compute.root_volumes import RootRequest
from nubis.services.core.errors import BadRequest, Conflict, Forbidden, NotFoundError, Unavailable
from nubis.services.core.guard import claim
from nubis.services.core.lookup import Page, PageRequest, get_by_id_or_name, paginate, validate_name
from nubis.services.core.principal import Principal
from nubis.services.core.submit import submit_task
from nubis.services.identity import policy, quotas
from nubis.services.inventory.hosts import HostService
from nubis.services.network import ports, qos, security_groups
from nubis.services.network.ports import NicRequest
from nubis.services.scheduler import PlacementRequest, Scheduler, claims
from nubis.services.storage import images
from nubis.services.storage.volumes import VolumeService
from nubis.tasks.engine import TaskEngine

STATUSES = (
    InstanceStatus.BUILDING,
    InstanceStatus.RUNNING,
    InstanceStatus.STOPPED,
    InstanceStatus.PAUSED,
    InstanceStatus.SUSPENDED,
    InstanceStatus.ERROR,
    InstanceStatus.DELETING,
)
GIB = 1024**3

# action -> (statuses it is allowed from, task_state while it runs, task kind)
ACTIONS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "start": ((InstanceStatus.STOPPED,), "starting", "instance.start"),
    # a suspended instance's saved memory is discarded by a stop
    "stop": (
        (InstanceStatus.RUNNING, InstanceStatus.PAUSED, InstanceStatus.SUSPENDED),
        "stopping",
        "instance.stop",
    ),
    "force-stop": (
        (InstanceStatus.RUNNING, InstanceStatus.PAUSED, InstanceStatus.SUSPENDED),
        "stopping",
        "instance.force-stop",
    ),
    "reboot": ((InstanceStatus.RUNNING,), "rebooting", "instance.reboot"),
    "hard-reboot": ((InstanceStatus.RUNNING,), "rebooting", "instance.reboot"),
    "pause": ((InstanceStatus.RUNNING,), "pausing", "instance.pause"),
    "resume": ((InstanceStatus.PAUSED, InstanceStatus.SUSPENDED), "resuming", "instance.resume"),
    "suspend": ((InstanceStatus.RUNNING, InstanceStatus.PAUSED), "suspending", "instance.suspend"),
}
# what an action tells its task beyond the kind
ACTION_PARAMS: dict[str, dict[str, object]] = {"hard-reboot": {"hard": True}}
CLONE_MODES = ("linked", "full")
DELETABLE = (
    InstanceStatus.BUILDING,
    InstanceStatus.RUNNING,
    InstanceStatus.STOPPED,
    InstanceStatus.PAUSED,
    InstanceStatus.SUSPENDED,
    InstanceStatus.ERROR,
)


def _quota_of(vcpus: int, memory_mib: int) -> dict[str, int]:
    return {"instances": 1, "vcpus": vcpus, "memory_mib": memory_mib}


def _check_name_free(session: Session, principal: Principal, name: str) -> None:
    exists = session.scalar(
        select(Instance).where(Instance.project_id == principal.project_id, Instance.name == name)
    )
    if exists is not None:
        raise Conflict(f"an instance named {name!r} already exists")


@dataclass(frozen=True)
class InstanceRequest:
    """A new instance as its caller asks for it (host, cluster and rule group by id or
    name; ``nics`` None: the project's default network, [] no NIC)."""

    name: str
    image: str
    flavor: str
    host: str | None = None
    rule_group: str | None = None
    cluster: str | None = None
    clone: str = "linked"
    nics: list[NicRequest] | None = None
    guest: GuestRequest = field(default_factory=GuestRequest)
    ha: bool = False
    ha_priority: int = 0
    properties: dict[str, str] | None = None
    root_pool: str | None = None  # a storage pool for the root disk (root_volumes.py)
    root_offering: str | None = None  # a disk offering whose tags pick that pool


class InstanceService:
    def __init__(
        self,
        engine: TaskEngine,
        hosts: HostService,
        scheduler: Scheduler,
        volumes: VolumeService | None = None,
    ) -> None:
        self.engine = engine
        self.hosts = hosts
        self.scheduler = scheduler
        self.volumes = volumes or VolumeService(engine)

    def get(self, session: Session, principal: Principal, ref: str) -> Instance:
        return get_by_id_or_name(session, Instance, ref, "instance", **principal.scope())

    def find_all(
        self,
        session: Session,
        principal: Principal,
        name: str | None = None,
        status: str | None = None,
        pages: PageRequest = PageRequest(),
        name_contains: str | None = None,
    ) -> Page:
        query = select(Instance).filter_by(**principal.scope())
        if name:
            query = query.where(Instance.name == name)
        if name_contains:
            query = query.where(Instance.name.contains(name_contains, autoescape=True))
        if status:
            if status not in STATUSES:
                raise BadRequest(f"status must be one of {', '.join(STATUSES)}")
            query = query.where(Instance.status == status)
        return paginate(session, query, Instance, pages)

    def create(
        self, session: Session, principal: Principal, req: InstanceRequest
    ) -> tuple[Instance, Task]:
        name, image_ref, flavor_ref = req.name, req.image, req.flavor
        host_ref, cluster_ref, rule_group_ref = req.host, req.cluster, req.rule_group
        nics, guest, clone = req.nics, req.guest, req.clone
        validate_name(name, "instance")
        check_ha_priority(req.ha_priority)
        checked_properties = check_properties(req.properties or {})
        if clone not in CLONE_MODES:
            raise BadRequest(f"clone must be one of {', '.join(CLONE_MODES)}")
        hostname = (
            cloudinit.check_hostname(guest.hostname) if guest.hostname else None
        ) or cloudinit.hostname_from(name)
        seed_format = cloudinit.check_seed_format(guest)
        user_data = cloudinit.check_user_data(guest.user_data) if guest.user_data else None
        key = keypairs.get(session, principal, guest.key_pair) if guest.key_pair else None
        image = images.get_visible(session, principal, image_ref)
        flavor = get_by_id_or_name(session, Flavor, flavor_ref, "flavor")
        if image.status != ImageStatus.ACTIVE:
            raise Conflict(f"image {image.name!r} is {image.status}, not active")
        if image.disk_format != "iso" and (image.virtual_size or 0) > flavor.disk_gib * GIB:
            raise BadRequest(
                f"image {image.name!r} needs {image.virtual_size} bytes of disk, "
                f"flavor {flavor.name!r} gives {flavor.disk_gib} GiB"
            )
        _check_name_free(session, principal, name)
        group = rule_groups.get(session, principal, rule_group_ref) if rule_group_ref else None
        if (host_ref or cluster_ref) and policy.SYSTEM_ADMIN not in principal.roles:
            raise Forbidden(
                "choosing the host or cluster is for system administrators: the scheduler "
                "places your instance"
            )
        requested = get_by_id_or_name(session, Host, host_ref, "host") if host_ref else None
        cluster = (
            get_by_id_or_name(session, Cluster, cluster_ref, "cluster") if cluster_ref else None
        )
        if nics is None:  # not a word about networks: the project's default one
            nics = ports.default_nics(session, principal)
        networks = ports.resolve_networks(session, principal, nics)
        lift = qos.may_lift(principal)
        nic_limits = [qos.for_port(n.bandwidth, flavor.bandwidth, lift) for n in nics or []]
        nic_groups = [
            security_groups.resolve(session, principal, n.security_groups) for n in nics or []
        ]
        cluster_id = cluster.id if cluster else None
        if networks:  # the instance runs where its networks are
            if cluster_id not in (None, networks[0].cluster_id):
                raise BadRequest("the instance's networks are not in the cluster asked for")
            cluster_id = networks[0].cluster_id
        host_id = requested.id if requested else None
        root_pool, secure = root_volumes.requested(
            session, principal, RootRequest(req.root_pool, req.root_offering, cluster_id), flavor
        )
        if root_pool is not None:  # and where its root disk's pool is
            root_volumes.check_pool(root_pool, image)
            cluster_id, host_id = root_volumes.placement(root_pool, cluster_id, host_id)
        else:  # the cluster's, if the cluster is known before placement
            known = cluster_id or (requested.cluster_id if requested else None)
            root_pool = root_volumes.cluster_default(session, known, image)
        request = PlacementRequest(
            cluster_id=cluster_id,
            vcpus=flavor.vcpus,
            memory_mib=flavor.memory_mib,
            disk_gib=0 if root_pool is not None else flavor.disk_gib,  # a volume: no host disk
            host_id=host_id,
            keep_ha_reserve=True,
        )
        request = self.scheduler.group_request(session, request, group.id if group else None)
        quotas.claim(session, principal.project_id, _quota_of(flavor.vcpus, flavor.memory_mib))
        host = self.scheduler.place(session, request)
        if root_pool is None:
            root_pool = root_volumes.cluster_default(session, host.cluster_id, image)
            if root_pool is not None:  # placed with a root file it will not have
                claims.release(session, host.id, 0, 0, flavor.disk_gib, instances=0)
        instance = Instance(
            rule_group_id=group.id if group else None,
            name=name,
            project_id=principal.project_id,
            host_id=host.id,
            image_id=image.id,
            flavor_id=flavor.id,
            vcpus=flavor.vcpus,
            memory_mib=flavor.memory_mib,
            disk_gib=0 if root_pool is not None else flavor.disk_gib,  # of the host's disks
            status=InstanceStatus.BUILDING,
            task_state="spawning",
            # a blank root disk owes nothing to an installer ISO
            clone_mode="full" if image.disk_format == "iso" else clone,
            # an installer ISO boots first, onto the blank root disk
            cdrom_image_id=image.id if image.disk_format == "iso" else None,
            boot_order="cdrom,disk" if image.disk_format == "iso" else "disk,cdrom",
            hostname=hostname,
            key_name=key.name if key else None,
            public_key=key.public_key if key else None,
            user_data=user_data,
            seed_format=seed_format,
            ha_enabled=req.ha,
            ha_priority=req.ha_priority,
            properties=checked_properties or None,
        )
        session.add(instance)
        session.flush()
        if root_pool is not None:
            root_volumes.plan(
                session, principal, self.volumes, instance, image, flavor, root_pool, secure
            )
        for position, (nic, network, groups, limits) in enumerate(
            zip(nics or [], networks, nic_groups, nic_limits, strict=True)
        ):
            port = ports.allocate(
                session, principal.project_id, network, instance.id, nic.ip, position
            )
            port.bandwidth = limits
            security_groups.join(session, port, groups)
        task = submit_task(
            self.engine, session, principal, "instance.create", "instance", instance.id
        )
        return instance, task

    def clone(
        self, session: Session, principal: Principal, ref: str, name: str
    ) -> tuple[Instance, Task]:
        """A full clone: a new instance, on the same host, whose root disk is a flattened
        copy of a stopped instance's (its data volumes are not copied). A linked clone
        needs a base that never changes: make a template, and linked clones of it."""
        validate_name(name, "instance")
        source = self.get(session, principal, ref)
        root_volumes.refuse(session, source, "a full clone")
        _check_name_free(session, principal, name)
        if source.host_id is None:
            raise Conflict(f"instance {source.name!r} is not on any host")
        claim(session, source, (InstanceStatus.STOPPED,), "cloning", "instance")
        quotas.claim(session, principal.project_id, _quota_of(source.vcpus, source.memory_mib))
        host = self.scheduler.place(
            session,
            PlacementRequest(
                vcpus=source.vcpus,
                memory_mib=source.memory_mib,
                disk_gib=source.disk_gib,
                host_id=source.host_id,  # its disk is in that host's pool
                keep_ha_reserve=True,
            ),
        )
        instance = Instance(
            name=name,
            project_id=principal.project_id,
            host_id=host.id,
            image_id=source.image_id,
            flavor_id=source.flavor_id,
            vcpus=source.vcpus,
            memory_mib=source.memory_mib,
            disk_gib=source.disk_gib,
            clone_mode="full",
            cdrom_image_id=source.cdrom_image_id,
            boot_order=source.boot_order,
            # told the same, but under its own name (and instance id: cloud-init sees
            # a new instance and runs its first-boot work again)
            hostname=cloudinit.hostname_from(name),
            key_name=source.key_name,
            public_key=source.public_key,
            user_data=source.user_data,
            seed_format=source.seed_format,
            status=InstanceStatus.BUILDING,
            task_state="spawning",
        )
        session.add(instance)
        session.flush()
        task = submit_task(
            self.engine,
            session,
            principal,
            "instance.create",
            "instance",
            instance.id,
            {"source_instance_id": source.id},
        )
        return instance, task

    def set_properties(
        self, session: Session, principal: Principal, ref: str, properties: object
    ) -> Instance:
        """Replace the instance's properties (the guest is not told)."""
        return self.change_properties(session, principal, ref, properties, replace=True)

    def change_properties(
        self,
        session: Session,
        principal: Principal,
        ref: str,
        changes: object,
        remove: tuple[str, ...] = (),
        replace: bool = False,
    ) -> Instance:
        """Merge ``changes`` into the properties (or replace them all), then drop the
        ``remove`` keys; the row is locked so concurrent changes all land."""
        instance = self.get(session, principal, ref)
        session.refresh(instance, with_for_update=True)
        base = {} if replace else dict(instance.properties or {})
        merged = {**base, **check_properties(changes)}
        for key in remove:
            if key not in merged:
                raise NotFoundError(f"instance {instance.name!r} has no property {key!r}")
            del merged[key]
        instance.properties = check_properties(merged) or None
        return instance

    def set_ha(
        self, session: Session, principal: Principal, ref: str, enabled: bool, priority: int
    ) -> Instance:
        """Mark an instance highly available (restarted after a host failure, highest
        priority first, and in place when its QEMU process dies), or not."""
        check_ha_priority(priority)
        instance = self.get(session, principal, ref)
        instance.ha_enabled = enabled
        instance.ha_priority = priority
        return instance

    def action(self, session: Session, principal: Principal, ref: str, action: str) -> Task:
        if action not in ACTIONS:
            raise NotFoundError(
                f"unknown action {action!r}; actions are {', '.join(sorted(ACTIONS))}"
            )
        instance = self.get(session, principal, ref)
        allowed, task_state, kind = ACTIONS[action]
        claim(session, instance, allowed, task_state, "instance")
        return submit_task(
            self.engine,
            session,
            principal,
            kind,
            "instance",
            instance.id,
            ACTION_PARAMS.get(action),
        )

    def delete(self, session: Session, principal: Principal, ref: str) -> tuple[Instance, Task]:
        instance = self.get(session, principal, ref)
        root_volumes.check_deletable(session, instance)
        claim(
            session,
            instance,
            DELETABLE,
            "deleting",
            "instance",
            new_status=InstanceStatus.DELETING,
        )
        task = submit_task(
            self.engine, session, principal, "instance.delete", "instance", instance.id
        )
        return instance, task

    def console_log(self, principal: Principal, ref: str, max_bytes: int) -> str:
        """The tail of the instance's serial console log, read through libvirt."""
        with self.engine.db.begin() as s:
            instance = self.get(s, principal, ref)
            host = s.get(Host, instance.host_id) if instance.host_id else None
            host_ref = self.hosts.ref(host) if host else None
            domain_name = instance.domain_name
        if host_ref is None:
            return ""
        try:
            data = self.hosts.driver.read_console_log(host_ref, domain_name, max_bytes)
        except DriverError as exc:
            raise Unavailable(f"cannot read the console log from the host: {exc}") from exc
        return data.decode("utf-8", errors="replace")


HA_PRIORITY_MAX = 1000
MAX_PROPERTIES = 128  # as Nova's metadata_items quota
MAX_PROPERTY_LENGTH = 255


def check_properties(properties: object) -> dict[str, str]:
    """Free key-value pairs of an instance: at most 128, keys 1-255 characters, values
    at most 255, both text."""
    if not isinstance(properties, dict):
        raise BadRequest("properties must be an object of key-value pairs")
    if len(properties) > MAX_PROPERTIES:
        raise BadRequest(f"at most {MAX_PROPERTIES} properties")
    for key, value in properties.items():
        if not isinstance(key, str) or not 1 <= len(key) <= MAX_PROPERTY_LENGTH:
            raise BadRequest(f"property keys are 1-{MAX_PROPERTY_LENGTH} characters")
        if not isinstance(value, str) or len(value) > MAX_PROPERTY_LENGTH:
            raise BadRequest(
                f"property {key!r}: values are text of at most {MAX_PROPERTY_LENGTH} characters"
            )
    return dict(properties)


def check_ha_priority(priority: int) -> None:
    if not 0 <= priority <= HA_PRIORITY_MAX:
        raise BadRequest(f"ha_priority must be between 0 and {HA_PRIORITY_MAX}")
