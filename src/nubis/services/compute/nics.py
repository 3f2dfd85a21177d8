"""NICs of existing instances: attach and detach (hot-plug when they run). (Live
changes to a port's security groups and limits are in ``live_ports``.)

Attach allocates the port (MAC, address) at request time, like create, so the
answer names the address; the task then puts the network, the DHCP reservation
and the filters on the host and plugs the NIC in. A failed attach gives the
port back. Detach unplugs the NIC, waits for the guest to let it go, and frees
the address. Both are idempotent, so a task re-run after a crash converges.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from nubis.db.models import (
    AttachmentStatus,
    Flavor,
    Host,
    Instance,
    InstanceStatus,
    Network,
    Port,
    Task,
)
from nubis.drivers.errors import DriverError
from nubis.drivers.libvirt.nics import NicDriver
from nubis.drivers.libvirt.nwfilters import port_filter_xml
from nubis.services.compute.instance_tasks import InstanceTasks
from nubis.services.compute.instances import InstanceService
from nubis.services.core.errors import BadRequest, Conflict, NotFoundError
from nubis.services.core.guard import claim
from nubis.services.core.principal import Principal
from nubis.services.core.submit import submit_task
from nubis.services.network import ports, qos, security_groups
from nubis.services.network.ports import MAX_NICS, NicRequest, PortOnHosts, cluster_refs
from nubis.tasks.engine import TaskContext, TaskHandler

CHANGEABLE = (InstanceStatus.RUNNING, InstanceStatus.PAUSED, InstanceStatus.STOPPED)


def get_port(session: Session, principal: Principal, port_id: str) -> Port:
    port = session.get(Port, port_id)
    if port is None or not principal.owns(port.project_id):
        raise NotFoundError(f"port {port_id!r} not found")
    return port


def port_filter(session: Session, port: Port) -> tuple[str, str]:
    network = session.get(Network, port.network_id)
    assert network is not None
    name = ports.port_filter_name(port.id)
    xml = port_filter_xml(
        name,
        port.id,
        network.scope_filter_name,
        security_groups.port_group_filters(session, port.id),
    )
    return name, xml


@dataclass
class NicService:
    instances: InstanceService
    tasks: InstanceTasks
    driver: NicDriver

    def handlers(self) -> list[TaskHandler]:
        return [AttachNicHandler(self), DetachNicHandler(self)]

    # -- requests ---------------------------------------------------------------------
    def request_attach(
        self, session: Session, principal: Principal, ref: str, nic: NicRequest
    ) -> tuple[Port, Task]:
        instance = self.instances.get(session, principal, ref)
        (network,) = ports.resolve_networks(session, principal, [nic])
        groups = security_groups.resolve(session, principal, nic.security_groups)
        host = session.get(Host, instance.host_id) if instance.host_id else None
        if host is None:
            raise Conflict(f"instance {instance.name!r} is not on any host")
        if network.cluster_id != host.cluster_id:
            raise BadRequest(
                f"network {network.name!r} is in another cluster than instance {instance.name!r}"
            )
        count, last = session.execute(
            select(func.count(), func.max(Port.position)).where(Port.instance_id == instance.id)
        ).one()
        if count >= MAX_NICS:
            raise Conflict(f"instance {instance.name!r} has {MAX_NICS} NICs already")
        claim(session, instance, CHANGEABLE, "attaching-nic", "instance")
        port = ports.allocate(
            session,
            principal.project_id,
            network,
            instance.id,
            nic.ip,
            0 if last is None else last + 1,
        )
        flavor = session.get(Flavor, instance.flavor_id) if instance.flavor_id else None
        port.bandwidth = qos.for_port(
            nic.bandwidth, flavor.bandwidth if flavor else None, qos.may_lift(principal)
        )
        security_groups.join(session, port, groups)
        task = submit_task(
            self.instances.engine,
            session,
            principal,
            "instance.attach-nic",
            "instance",
            instance.id,
            {"port_id": port.id},
        )
        return port, task

    def request_detach(
        self, session: Session, principal: Principal, ref: str, port_id: str
    ) -> Task:
        instance = self.instances.get(session, principal, ref)
        port = get_port(session, principal, port_id)
        if port.instance_id != instance.id:
            raise NotFoundError(f"instance {instance.name!r} has no port {port_id!r}")
        claim(session, instance, CHANGEABLE, "detaching-nic", "instance")
        port.status = "detaching"
        return submit_task(
            self.instances.engine,
            session,
            principal,
            "instance.detach-nic",
            "instance",
            instance.id,
            {"port_id": port.id},
        )


class AttachNicHandler:
    kind = "instance.attach-nic"
    steps = ("network", "plug")
    resumable = True  # network, reservation, filters and the plug are all idempotent

    def __init__(self, nics: NicService) -> None:
        self.n = nics

    def run(self, ctx: TaskContext) -> None:
        t = self.n.tasks
        loaded = t.load(ctx.resource_id)
        ctx.step("network", 20)
        t.ports.prepare(loaded.ref, ctx.resource_id)
        with t.db.begin() as s:
            port = s.get(Port, ctx.params["port_id"])
            if port is None:
                raise LookupError("the port was removed")
            nic = ports.interface_of(s, port)
        ctx.step("plug", 60)
        self.n.driver.attach_nic(loaded.ref, ctx.resource_id, nic)
        with t.db.begin() as s:
            s.execute(
                update(Port)
                .where(Port.id == ctx.params["port_id"])
                .values(status=AttachmentStatus.ATTACHED)
            )
            s.execute(
                update(Instance).where(Instance.id == ctx.resource_id).values(task_state=None)
            )

    def failed(self, ctx: TaskContext, error: str) -> None:
        """Give the port back: out of the domain, off the hosts, out of the database."""
        _drop_port(self.n, ctx.resource_id, ctx.params["port_id"], unplug=True)
        self.n.tasks.reconcile(ctx.resource_id)


class DetachNicHandler:
    kind = "instance.detach-nic"
    steps = ("unplug",)
    resumable = True

    def __init__(self, nics: NicService) -> None:
        self.n = nics

    def run(self, ctx: TaskContext) -> None:
        ctx.step("unplug", 20)
        _drop_port(self.n, ctx.resource_id, ctx.params["port_id"], unplug=True, strict=True)
        with self.n.tasks.db.begin() as s:
            s.execute(
                update(Instance).where(Instance.id == ctx.resource_id).values(task_state=None)
            )

    def failed(self, ctx: TaskContext, error: str) -> None:
        """The NIC is still there: the port stays, attached."""
        with self.n.tasks.db.begin() as s:
            s.execute(
                update(Port)
                .where(Port.id == ctx.params["port_id"])
                .values(status=AttachmentStatus.ATTACHED)
            )
        self.n.tasks.reconcile(ctx.resource_id)


def _drop_port(
    nics: NicService, instance_id: str, port_id: str, unplug: bool, strict: bool = False
) -> None:
    """Unplug the port's NIC from the instance (``strict``: a failure is an error),
    then release the port: reservation, filter, memberships, row."""
    t = nics.tasks
    with t.db.begin() as s:
        port = s.get(Port, port_id)
        if port is None:
            return
        nic = ports.interface_of(s, port)
    if unplug:
        try:
            loaded = t.load(instance_id)
            nics.driver.detach_nic(loaded.ref, instance_id, nic)
        except (DriverError, LookupError):
            if strict:
                raise
    with t.db.read() as s:
        port = s.get(Port, port_id)
        instance = s.get(Instance, instance_id)
        if port is None:
            return
        refs = cluster_refs(s, instance, t.hosts) if instance is not None else []
        gone = PortOnHosts.of(s, port)
    t.ports.unplug(refs, [gone])
    with t.db.begin() as s:
        port = s.get(Port, port_id)
        if port is None:
            return
        left = t.ports.forget(s, port)
        s.flush()
        s.delete(port)
    t.ports.groups.push(left, strict=False)
    t.ports.left([gone.network_id])
