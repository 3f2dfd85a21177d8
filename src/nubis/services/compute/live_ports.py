"""Live changes to a port: its security groups and bandwidth limits, applied to a
running NIC at once (its filter defined again, its NIC updated; no unplug).

A change is recorded first, in a short transaction that also marks the port's
instance ``updating-port`` (nothing else changes it meanwhile) and begins an
inline task; the hosts are called after that transaction, never inside one; then
the mark is cleared and the task ends. If the hosts refuse, the old values come
back and nothing changed. If the process dies in between, recovery pushes the
recorded values to the hosts (the record is the truth) and clears the mark.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, update
from sqlalchemy.orm import Session

from nubis.db.models import Flavor, Host, Instance, InstanceStatus, Port, PortSecurityGroup, Task
from nubis.drivers.errors import DriverError, Unsupported
from nubis.drivers.libvirt.nics import NicDriver
from nubis.services.compute.instance_tasks import InstanceTasks
from nubis.services.compute.instances import InstanceService
from nubis.services.compute.nics import get_port, port_filter
from nubis.services.core.errors import Conflict, Unavailable
from nubis.services.core.guard import claim
from nubis.services.core.principal import Principal
from nubis.services.network import ports, qos, security_groups
from nubis.services.network.ports import cluster_refs, interface_of
from nubis.tasks.engine import TaskContext, TaskHandler

KIND = "port.update"
UPDATING = "updating-port"
# every status an instance can be changed in (not while it is made or deleted)
CHANGEABLE = (
    InstanceStatus.RUNNING,
    InstanceStatus.PAUSED,
    InstanceStatus.STOPPED,
    InstanceStatus.SUSPENDED,
    InstanceStatus.ERROR,
)


@dataclass
class LivePorts:
    instances: InstanceService
    tasks: InstanceTasks
    driver: NicDriver

    def __post_init__(self) -> None:
        self.db = self.tasks.db
        self.engine = self.instances.engine

    def handlers(self) -> list[TaskHandler]:
        return [PortUpdateHandler(self)]

    # -- requests -----------------------------------------------------------------------
    def set_groups(self, principal: Principal, port_id: str, group_refs: list[str]) -> Port:
        """The port's security groups become ``group_refs``; its filter is defined again
        on the hosts, so a running NIC takes the new rules at once."""
        with self.db.begin() as s:
            port = get_port(s, principal, port_id)
            groups = security_groups.resolve(s, principal, group_refs)
            before = ports.port_groups(s, [port.id])
            task = self._begin(s, principal, port)
            s.execute(delete(PortSecurityGroup).where(PortSecurityGroup.port_id == port.id))
            security_groups.join(s, port, groups)
            after = {g.id for g in groups}
            s.flush()
            s.expunge(port)
        if task is not None:
            try:
                self.engine.fault_point(KIND, "apply")
                self.push_groups(port_id)
            except Exception as exc:
                with self.db.begin() as s:
                    s.execute(delete(PortSecurityGroup).where(PortSecurityGroup.port_id == port_id))
                    for group_id in before:
                        s.add(PortSecurityGroup(port_id=port_id, group_id=group_id))
                self._end(task, str(exc))
                raise
            self._end(task)
        # rules naming the groups it left or joined learn (or forget) its address
        self.tasks.ports.groups.push(before | after, strict=False)
        return port

    def set_bandwidth(self, principal: Principal, port_id: str, bandwidth: dict | None) -> Port:
        """New limits for the port (none: its flavor's), applied live to a running NIC.
        Only a system administrator may lift a limit above the flavor's."""
        with self.db.begin() as s:
            port = get_port(s, principal, port_id)
            instance = s.get(Instance, port.instance_id) if port.instance_id else None
            flavor = s.get(Flavor, instance.flavor_id) if instance and instance.flavor_id else None
            limits = qos.for_port(
                bandwidth, flavor.bandwidth if flavor else None, qos.may_lift(principal)
            )
            before = port.bandwidth
            task = self._begin(s, principal, port)
            port.bandwidth = limits
            s.flush()
            s.expunge(port)
        if task is not None:
            try:
                self.engine.fault_point(KIND, "apply")
                self.push_bandwidth(port_id)
            except Exception as exc:
                with self.db.begin() as s:
                    s.execute(update(Port).where(Port.id == port_id).values(bandwidth=before))
                self._end(task, str(exc))
                raise
            self._end(task)
        return port

    # -- the marks ----------------------------------------------------------------------
    def _begin(self, session: Session, principal: Principal, port: Port) -> Task | None:
        """Mark the port's instance (compare-and-swap) and begin the change's task;
        None: the port is on no instance, so no host has it."""
        if port.instance_id is None:
            return None
        instance = session.get(Instance, port.instance_id)
        assert instance is not None
        claim(session, instance, CHANGEABLE, UPDATING, "instance")
        task = self.engine.begin_inline(
            session,
            KIND,
            "instance",
            instance.id,
            params={"port_id": port.id},
            project_id=principal.project_id,
            user_id=principal.user_id,
        )
        session.flush()
        return task

    def _end(self, task: Task, error: str | None = None) -> None:
        self.release(task.resource_id)
        self.engine.finish(task.id, error)

    def release(self, instance_id: str) -> None:
        with self.db.begin() as s:
            s.execute(
                update(Instance)
                .where(Instance.id == instance_id, Instance.task_state == UPDATING)
                .values(task_state=None)
            )

    # -- the hosts ----------------------------------------------------------------------
    def push_groups(self, port_id: str) -> None:
        """Define the port's filter (and its groups' filters) again where it exists."""
        with self.db.read() as s:
            port = s.get(Port, port_id)
            if port is None or port.instance_id is None:
                return
            instance = s.get(Instance, port.instance_id)
            assert instance is not None
            group_ids = ports.port_groups(s, [port.id])
            group_filters = self.tasks.ports.groups.filters_for(s, group_ids)
            name, xml = port_filter(s, port)
            host_refs = cluster_refs(s, instance, self.tasks.hosts)
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

    def push_bandwidth(self, port_id: str) -> None:
        """Give the port's NIC its recorded limits, where its domain is defined."""
        with self.db.read() as s:
            port = s.get(Port, port_id)
            if port is None or port.instance_id is None:
                return
            instance = s.get(Instance, port.instance_id)
            host = s.get(Host, instance.host_id) if instance and instance.host_id else None
            if instance is None or host is None:
                return
            ref, nic = self.tasks.hosts.ref(host), interface_of(s, port)
        try:
            if self.tasks.driver.defined_on(ref, instance.id):
                self.driver.update_nic(ref, instance.id, nic)
        except Unsupported as exc:
            raise Conflict(str(exc)) from exc
        except DriverError as exc:
            raise Unavailable(f"could not change the NIC: {exc}") from exc


class PortUpdateHandler:
    """Port changes run inside their request; this only finishes one after a crash:
    the recorded groups and limits are pushed to the hosts, the mark cleared."""

    kind = KIND
    steps = ("apply",)
    resumable = False

    def __init__(self, live: LivePorts) -> None:
        self.live = live

    def run(self, ctx: TaskContext) -> None:
        raise RuntimeError("a port change runs inside its request and cannot be run again")

    def failed(self, ctx: TaskContext, error: str) -> None:
        try:
            self.live.push_groups(ctx.params["port_id"])
            self.live.push_bandwidth(ctx.params["port_id"])
        finally:
            self.live.release(ctx.resource_id)
