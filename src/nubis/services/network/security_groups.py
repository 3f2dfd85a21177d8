"""Security groups: what may reach ports (ingress rules) and what they may start
(egress rules), enforced on the hosts by nwfilter.

Every group starts with two rules, as Neutron's do: "anything from members of this
group" (ports of a group talk to each other, and nothing else gets in until a rule
says so) and "anything out to anywhere" (delete it, and the ports start only what
the group's other egress rules allow). A rule naming a remote group is about the
addresses of that group's ports: when its membership changes, the filters that name it are
defined again on every host, and running NICs take the new rules at once.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass

from sqlalchemy import delete, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nubis.db.models import (
    Host,
    HostStatus,
    Port,
    PortSecurityGroup,
    Project,
    SecurityGroup,
    SecurityGroupRule,
)
from nubis.db.session import Database
from nubis.drivers.errors import DriverError
from nubis.drivers.libvirt.nwfilters import PROTOCOLS, Allow, FilterDriver, group_filter_xml
from nubis.services.core.errors import BadRequest, Conflict, NotFoundError, Unavailable
from nubis.services.core.lookup import get_by_id_or_name, validate_name
from nubis.services.core.principal import Principal
from nubis.services.inventory.hosts import HostService

log = logging.getLogger(__name__)
DEFAULT_GROUP = "default"
MAX_GROUPS_PER_PORT = 5
INGRESS, EGRESS = "ingress", "egress"


@dataclass(frozen=True)
class RuleRequest:
    protocol: str
    port_min: int | None = None
    port_max: int | None = None
    remote_cidr: str | None = None
    remote_group: str | None = None
    direction: str = INGRESS


def get(session: Session, principal: Principal, ref: str) -> SecurityGroup:
    """A group of the caller's project; the project's default group always exists."""
    if ref == DEFAULT_GROUP:
        return ensure_default(session, principal.project_id)
    return get_by_id_or_name(session, SecurityGroup, ref, "security group", **principal.scope())


def _new_group(session: Session, project_id: str, name: str, description: str) -> SecurityGroup:
    group = SecurityGroup(name=name, project_id=project_id, description=description)
    session.add(group)
    session.flush()
    session.add(SecurityGroupRule(group_id=group.id, protocol="any", remote_group_id=group.id))
    session.add(SecurityGroupRule(group_id=group.id, protocol="any", direction=EGRESS))
    session.flush()
    return group


def ensure_default(session: Session, project_id: str) -> SecurityGroup:
    """The project's default group, made on first use. Two first uses at once: the
    unique (project, name) lets one insert win; the other takes the winner's row."""
    query = select(SecurityGroup).where(
        SecurityGroup.project_id == project_id, SecurityGroup.name == DEFAULT_GROUP
    )
    group = session.scalar(query)
    if group is not None:
        return group
    try:
        with session.begin_nested():
            return _new_group(
                session, project_id, DEFAULT_GROUP, "ports of the project talk to each other"
            )
    except IntegrityError:
        return session.scalars(query).one()


def ensure_default_in(db: Database, project_id: str) -> None:
    """Make the project's default group if it has none (a write transaction only
    then), so the reads that follow find it."""
    with db.read() as s:
        found = s.scalar(
            select(SecurityGroup.id).where(
                SecurityGroup.project_id == project_id, SecurityGroup.name == DEFAULT_GROUP
            )
        )
    if found is None:
        with db.begin() as s:
            ensure_default(s, project_id)


def release_project(session: Session, project: Project) -> list[str]:
    """The project's default group, made for it, goes with the project; a group its
    users made must be deleted by them first. The names of the filters the hosts may
    still hold of it (``SecurityGroupService.remove_filters``, once committed)."""
    groups = session.scalars(select(SecurityGroup).where(SecurityGroup.project_id == project.id))
    filters = []
    for group in groups:
        if group.name != DEFAULT_GROUP:
            raise Conflict(f"project {project.name!r} still has security groups; delete them first")
        session.execute(delete(SecurityGroupRule).where(SecurityGroupRule.group_id == group.id))
        session.delete(group)
        filters.append(group.filter_name)
    session.flush()
    return filters


def resolve(session: Session, principal: Principal, refs: list[str] | None) -> list[SecurityGroup]:
    """A NIC's groups (none given: the project's default group)."""
    if refs is None:
        return [ensure_default(session, principal.project_id)]
    if len(refs) > MAX_GROUPS_PER_PORT:
        raise BadRequest(f"at most {MAX_GROUPS_PER_PORT} security groups per port")
    groups = [get(session, principal, ref) for ref in refs]
    return list({g.id: g for g in groups}.values())


def join(session: Session, port: Port, groups: list[SecurityGroup]) -> None:
    for group in groups:
        session.add(PortSecurityGroup(port_id=port.id, group_id=group.id))
    session.flush()


def port_group_filters(session: Session, port_id: str) -> list[str]:
    groups = session.scalars(
        select(SecurityGroup)
        .join(PortSecurityGroup, PortSecurityGroup.group_id == SecurityGroup.id)
        .where(PortSecurityGroup.port_id == port_id)
        .order_by(SecurityGroup.name)
    )
    return [g.filter_name for g in groups]


def compile_rules(session: Session, group_id: str) -> list[Allow]:
    """The group's rules as nwfilter accepts: one per remote address or CIDR."""
    allows = []
    rules = session.scalars(
        select(SecurityGroupRule)
        .where(SecurityGroupRule.group_id == group_id)
        .order_by(SecurityGroupRule.created_at, SecurityGroupRule.id)
    )
    for rule in rules:
        if rule.remote_group_id is not None:
            sources = sorted(
                session.scalars(
                    select(Port.ip)
                    .join(PortSecurityGroup, PortSecurityGroup.port_id == Port.id)
                    .where(PortSecurityGroup.group_id == rule.remote_group_id)
                ),
                key=ipaddress.IPv4Address,
            )
        else:
            sources = [rule.remote_cidr or "0.0.0.0/0"]
        direction = "out" if rule.direction == EGRESS else "in"
        allows += [
            Allow(rule.protocol, remote, rule.port_min, rule.port_max, direction)
            for remote in sources
        ]
    return allows


def groups_naming(session: Session, group_ids: set[str]) -> set[str]:
    """The groups whose rules change with ``group_ids``: those groups, and the groups
    with a rule whose remote group is one of them."""
    if not group_ids:
        return set()
    naming = session.scalars(
        select(SecurityGroupRule.group_id).where(SecurityGroupRule.remote_group_id.in_(group_ids))
    )
    return set(group_ids) | set(naming)


def check_rule(req: RuleRequest) -> RuleRequest:
    if req.direction not in (INGRESS, EGRESS):
        raise BadRequest(f"direction must be {INGRESS} or {EGRESS}")
    if req.protocol not in PROTOCOLS:
        raise BadRequest(f"protocol must be one of {', '.join(PROTOCOLS)}")
    if req.remote_cidr and req.remote_group:
        raise BadRequest("give remote_cidr or remote_group, not both")
    cidr = None
    if req.remote_cidr is not None:
        try:
            net = ipaddress.ip_network(req.remote_cidr, strict=True)
        except ValueError as exc:
            raise BadRequest(f"remote_cidr {req.remote_cidr!r}: {exc}") from None
        if net.version != 4:
            raise BadRequest("only IPv4 remote_cidr is supported")
        cidr = str(net)
    ports = (req.port_min, req.port_max)
    if req.protocol in ("tcp", "udp"):
        low = req.port_min if req.port_min is not None else 1
        high = req.port_max if req.port_max is not None else (req.port_min or 65535)
        if not 1 <= low <= high <= 65535:
            raise BadRequest("ports must satisfy 1 <= port_min <= port_max <= 65535")
        ports = (low, high)
    elif ports != (None, None):
        raise BadRequest(f"{req.protocol} has no ports: give no port_min/port_max")
    return RuleRequest(req.protocol, ports[0], ports[1], cidr, req.remote_group, req.direction)


class SecurityGroupService:
    def __init__(self, db: Database, driver: FilterDriver, hosts: HostService) -> None:
        self.db = db
        self.driver = driver
        self.hosts = hosts

    def create(self, principal: Principal, name: str, description: str = "") -> SecurityGroup:
        validate_name(name, "security group")
        if len(description) > 255:
            raise BadRequest("description: at most 255 characters")
        with self.db.begin() as s:
            exists = s.scalar(
                select(SecurityGroup).where(
                    SecurityGroup.project_id == principal.project_id, SecurityGroup.name == name
                )
            )
            if exists is not None:
                raise Conflict(f"a security group named {name!r} already exists")
            return _new_group(s, principal.project_id, name, description)

    def add_rule(self, principal: Principal, ref: str, req: RuleRequest) -> SecurityGroupRule:
        req = check_rule(req)
        with self.db.begin() as s:
            group = get(s, principal, ref)
            remote = get(s, principal, req.remote_group) if req.remote_group else None
            rule = SecurityGroupRule(
                group_id=group.id,
                direction=req.direction,
                protocol=req.protocol,
                port_min=req.port_min,
                port_max=req.port_max,
                remote_cidr=req.remote_cidr,
                remote_group_id=remote.id if remote else None,
            )
            s.add(rule)
            s.flush()
            group_id = group.id
        self.push({group_id})
        return rule

    def delete_rule(self, principal: Principal, ref: str, rule_id: str) -> None:
        with self.db.begin() as s:
            group = get(s, principal, ref)
            rule = s.get(SecurityGroupRule, rule_id)
            if rule is None or rule.group_id != group.id:
                raise NotFoundError(f"no rule {rule_id!r} in security group {group.name!r}")
            s.delete(rule)
            group_id = group.id
        self.push({group_id})

    def delete(self, principal: Principal, ref: str) -> None:
        with self.db.begin() as s:
            group = get(s, principal, ref)
            users = s.scalar(select(func.count()).where(PortSecurityGroup.group_id == group.id))
            if users:
                raise Conflict(f"security group {group.name!r} is used by {users} port(s)")
            naming = s.scalars(
                select(SecurityGroup.name)
                .join(SecurityGroupRule, SecurityGroupRule.group_id == SecurityGroup.id)
                .where(
                    SecurityGroupRule.remote_group_id == group.id,
                    SecurityGroup.id != group.id,
                )
            ).all()
            if naming:
                raise Conflict(
                    f"security group {group.name!r} is the remote group of rules of "
                    f"{', '.join(sorted(set(naming)))}"
                )
            for rule in s.scalars(
                select(SecurityGroupRule).where(
                    or_(
                        SecurityGroupRule.group_id == group.id,
                        SecurityGroupRule.remote_group_id == group.id,
                    )
                )
            ):
                s.delete(rule)
            s.flush()
            s.delete(group)
            name = group.filter_name
        self.remove_filters([name])

    def remove_filters(self, names: list[str]) -> None:
        """Deleted groups' filters leave the hosts that are up (outside any transaction;
        no NIC uses them any more)."""
        if not names:
            return
        with self.db.read() as s:
            refs = [self.hosts.ref(h) for h in s.scalars(select(Host)) if h.state == HostStatus.UP]
        for host_ref in refs:
            for name in names:
                try:
                    self.driver.remove(host_ref, name)
                except DriverError as exc:  # an unused filter left behind harms nobody
                    log.warning("could not remove filter %s from %s: %s", name, host_ref.uri, exc)

    def filters_for(self, session: Session, group_ids: set[str]) -> list[tuple[str, str]]:
        """(name, XML) of the filters of these groups."""
        out = []
        for group_id in sorted(group_ids):
            group = session.get(SecurityGroup, group_id)
            if group is not None:
                xml = group_filter_xml(
                    group.filter_name, group.id, compile_rules(session, group_id)
                )
                out.append((group.filter_name, xml))
        return out

    def push(self, group_ids: set[str], strict: bool = True) -> None:
        """Define again, on every host that is up and has them, the filters of these
        groups and of the groups naming them: running NICs take the new rules.
        ``strict``: a host that fails is an error (else it is logged)."""
        with self.db.begin() as s:
            filters = self.filters_for(s, groups_naming(s, group_ids))
            hosts = [
                (h.name, self.hosts.ref(h))
                for h in s.scalars(select(Host))
                if h.state == HostStatus.UP
            ]
        failed = []
        for host_name, host_ref in hosts:
            try:
                for name, xml in filters:
                    self.driver.redefine_if_present(host_ref, name, xml)
            except DriverError as exc:
                failed.append(f"{host_name}: {exc}")
        if failed and not strict:
            log.warning("security group filters not updated on: %s", "; ".join(failed))
        elif failed:
            raise Unavailable(
                "the change is saved, but these hosts could not apply it yet (it is "
                f"applied when their instances next start or move): {'; '.join(failed)}"
            )
