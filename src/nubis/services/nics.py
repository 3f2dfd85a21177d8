"""NICs of existing instances: attach and detach (hot-plug when they run), and
live changes to a port's security groups and bandwidth limits.

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

from nubis.db.models import Flavor, Host, Instance, Network, Port, PortSecurityGroup, Task
from nubis.drivers.errors import DriverError, Unsupported
from nubis.drivers.libvirt.nics import NicDriver
from nubis.drivers.libvirt.nwfilters import port_filter_xml
from nubis.services import ports, qos, security_groups
from nubis.services.auth import Principal
from nubis.services.errors import BadRequest, Conflict, NotFoundError, Unavailable
from nubis.services.instance_tasks import InstanceTasks
from nubis.services.instances import InstanceService
from nubis.services.ports import MAX_NICS, NicRequest, cluster_refs, interface_of
from nubis.tasks.engine import TaskContext, TaskEngine

CHANGEABLE = ("running", "paused", "stopped")


def get_port(session: Session, principal: Principal, port_id: str) -> Port:
    port = session.get(Port, port_id)
    if port is None or not principal.owns(port.project_id):
        raise NotFoundError(f"port {port_id!r} not found")
    return port


def _port_filter(session: Session, port: Port) -> tuple[str, str]:
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

    def register(self, engine: TaskEngine) -> None:
        engine.register(AttachNicHandler(self))
        engine.register(DetachNicHandler(self))

    # -- requests ---------------------------------------------------------------------
    def request_attach(
        self, session: Session, principal: Principal, ref: str, nic: NicRequest
    ) -> tuple[Port, Task]:
        instance = self.instances.get(session, principal, ref)
        (network,) = ports.resolve_networks(session, principal, [nic])
        groups = security_groups.resolve(session, principal, nic.security_groups)
        limits = qos.check_bandwidth(nic.bandwidth)
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
        self.instances.guard(session, instance, CHANGEABLE, "attaching-nic")
        port = ports.allocate(
            session,
            principal.project_id,
            network,
            instance.id,
            nic.ip,
            0 if last is None else last + 1,
        )
        flavor = session.get(Flavor, instance.flavor_id) if instance.flavor_id else None
        port.bandwidth = limits or (flavor.bandwidth if flavor is not None else None)
        security_groups.join(session, port, groups)
        task = self.instances.submit(
            session, principal, "instance.attach-nic", instance.id, {"port_id": port.id}
        )
        return port, task

    def request_detach(
        self, session: Session, principal: Principal, ref: str, port_id: str
    ) -> Task:
        instance = self.instances.get(session, principal, ref)
        port = get_port(session, principal, port_id)
        if port.instance_id != instance.id:
            raise NotFoundError(f"instance {instance.name!r} has no port {port_id!r}")
        self.instances.guard(session, instance, CHANGEABLE, "detaching-nic")
        port.status = "detaching"
        return self.instances.submit(
            session, principal, "instance.detach-nic", instance.id, {"port_id": port.id}
        )

    # -- live changes -----------------------------------------------------------------
    def _idle_instance(self, session: Session, port: Port) -> Instance | None:
        if port.instance_id is None:
            return None
        instance = session.get(Instance, port.instance_id)
        if instance is not None and instance.task_state is not None:
            raise Conflict(
                f"instance {instance.name!r} is {instance.task_state}: try again when it is done"
            )
        return instance

    def set_groups(self, principal: Principal, port_id: str, group_refs: list[str]) -> Port:
        """The port's security groups become ``group_refs``; its filter is defined again on
        the hosts, so a running NIC takes the new rules at once."""
        db = self.tasks.db
        with db.begin() as s:
            port = get_port(s, principal, port_id)
            instance = self._idle_instance(s, port)
            groups = security_groups.resolve(s, principal, group_refs)
            before = ports.port_groups(s, [port.id])
            for member in s.scalars(
                select(PortSecurityGroup).where(PortSecurityGroup.port_id == port.id)
            ):
                s.delete(member)
            s.flush()
            security_groups.join(s, port, groups)
            after = {g.id for g in groups}
            group_filters = self.tasks.ports.groups.filters_for(s, after)
            name, xml = _port_filter(s, port)
            host_refs = cluster_refs(s, instance, self.tasks.hosts) if instance else []
            failed = []
            for ref in host_refs:
                try:
                    for _group, group_xml in group_filters:
                        self.tasks.ports.filters.define(ref, group_xml)
                    self.tasks.ports.filters.redefine_if_present(ref, name, xml)
                except DriverError as exc:
                    failed.append(f"{ref.uri}: {exc}")
            if failed and len(failed) == len(host_refs):
                raise Unavailable(f"no host could apply the groups: {'; '.join(failed)}")
            s.expunge(port)
        # rules naming the groups it left or joined learn (or forget) its address
        self.tasks.ports.groups.push(before | after, strict=False)
        return port

    def set_bandwidth(self, principal: Principal, port_id: str, bandwidth: dict | None) -> Port:
        """New limits for the port, applied live to a running NIC (no unplug)."""
        limits = qos.check_bandwidth(bandwidth)
        with self.tasks.db.begin() as s:
            port = get_port(s, principal, port_id)
            instance = self._idle_instance(s, port)
            port.bandwidth = limits
            s.flush()
            if instance is not None and instance.host_id is not None:
                host = s.get(Host, instance.host_id)
                assert host is not None
                ref = self.tasks.hosts.ref(host)
                if self.tasks.driver.defined_on(ref, instance.id):
                    try:
                        self.driver.update_nic(ref, instance.id, interface_of(s, port))
                    except Unsupported as exc:
                        raise Conflict(str(exc)) from exc
                    except DriverError as exc:
                        raise Unavailable(f"could not change the NIC: {exc}") from exc
            s.expunge(port)
        return port


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
                update(Port).where(Port.id == ctx.params["port_id"]).values(status="attached")
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
                update(Port).where(Port.id == ctx.params["port_id"]).values(status="attached")
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
    with t.db.begin() as s:
        port = s.get(Port, port_id)
        instance = s.get(Instance, instance_id)
        if port is None:
            return
        refs = cluster_refs(s, instance, t.hosts) if instance is not None else []
        left = t.ports.release(s, refs, port)
        s.flush()
        s.delete(port)
    t.ports.groups.push(left, strict=False)
