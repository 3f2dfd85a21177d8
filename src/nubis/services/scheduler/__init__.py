"""The scheduler: filters remove hosts that cannot take a VM, weighers order the rest,
and a claim takes the capacity on the best host in the caller's transaction."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from nubis.db.models import Host, Instance, RuleGroup
from nubis.services.core.errors import Conflict
from nubis.services.scheduler import claims, reserve
from nubis.services.scheduler.filters import FILTERS, PlacementRequest
from nubis.services.scheduler.state import HostState, load_host_states
from nubis.services.scheduler.weighers import ORDER_BY_SQL, order

__all__ = ["NoValidHost", "PlacementRequest", "Scheduler", "claims"]


# how many best hosts the database pre-selects for a placement
CANDIDATES = 8


class NoValidHost(Conflict):
    code = "no_valid_host"


def filter_hosts(
    hosts: list[HostState], req: PlacementRequest
) -> tuple[list[HostState], list[tuple[str, int]]]:
    """The hosts every filter accepts, and how many hosts each filter removed."""
    removed: list[tuple[str, int]] = []
    for f in FILTERS:
        kept = [h for h in hosts if not f.reject(h, req)]
        if len(kept) != len(hosts):
            removed.append((f.name, len(hosts) - len(kept)))
        hosts = kept
        if not hosts:
            break
    return hosts, removed


def explain(total: int, removed: list[tuple[str, int]]) -> str:
    if total == 0:
        return "no host can take this instance: no host is registered"
    reasons = ", ".join(f"{name} removed {n}" for name, n in removed)
    return f"no host can take this instance: of {total} host(s), {reasons}"


class Scheduler:
    def group_request(
        self,
        session: Session,
        req: PlacementRequest,
        group_id: str | None,
        instance_id: str | None = None,
    ) -> PlacementRequest:
        """Add the rule group's constraints (and lock the group: placements into one
        group are serialised, so two strict anti-affinity members never share a host)."""
        if group_id is None:
            return req
        session.execute(
            update(RuleGroup).where(RuleGroup.id == group_id).values(version=RuleGroup.version + 1)
        )
        group = session.get(RuleGroup, group_id)
        assert group is not None
        members = select(Instance.host_id).where(
            Instance.rule_group_id == group_id, Instance.host_id.is_not(None)
        )
        if instance_id is not None:
            members = members.where(Instance.id != instance_id)
        return PlacementRequest(
            **{
                **req.__dict__,
                "group_policy": group.policy,
                "group_strict": group.strict,
                "group_host_ids": frozenset(group.host_ids or ()),
                "member_host_ids": frozenset(session.scalars(members).all()),
            },
        )

    def place_elsewhere(
        self, session: Session, instance: Instance, source: Host, target_id: str | None = None
    ) -> Host:
        """Claim a host for an instance leaving ``source``: same cluster and virtualization
        type, never the source, the instance's rule group obeyed (it not counting itself)."""
        req = PlacementRequest(
            vcpus=instance.vcpus,
            memory_mib=instance.memory_mib,
            disk_gib=instance.disk_gib,
            virt_type=source.effective_virt_type,
            host_id=target_id,
            cluster_id=source.cluster_id,
            exclude_host_ids=frozenset({source.id}),
        )
        req = self.group_request(session, req, instance.rule_group_id, instance.id)
        return self.place(session, req)

    def place(self, session: Session, req: PlacementRequest) -> Host:
        """Choose a host and claim the request on it, in the caller's transaction.

        A new instance (``keep_ha_reserve``) is refused when its claim breaks the HA
        reserve of the chosen host's cluster; the caller's transaction then rolls back.

        Fast path: the database applies the filters' conditions and the weigher and
        returns a few best candidates, which the filters and weighers then judge as
        usual. Only when none of them can be claimed are all hosts loaded, to claim
        one or to say which filter removed how many.
        """
        if req.group_policy is None or req.group_strict:  # soft groups: weighed in Python
            candidates = load_host_states(
                session,
                req.cluster_id,
                where=[c for c in (f.where(req) for f in FILTERS) if c is not None],
                order_by=ORDER_BY_SQL,
                limit=CANDIDATES,
            )
            passing, _ = filter_hosts(candidates, req)
            chosen = self._claim_first(session, passing, req)
            if chosen is not None:
                return self._check_reserve(session, chosen, req)
        hosts = load_host_states(session, req.cluster_id)
        passing, removed = filter_hosts(hosts, req)
        if not passing:
            raise NoValidHost(explain(len(hosts), removed))
        chosen = self._claim_first(session, passing, req)
        if chosen is not None:
            return self._check_reserve(session, chosen, req)
        raise NoValidHost(
            f"no host can take this instance: the {len(passing)} host(s) that fitted were "
            "filled by concurrent requests"
        )

    @staticmethod
    def _check_reserve(session: Session, chosen: Host, req: PlacementRequest) -> Host:
        if req.keep_ha_reserve:
            why = reserve.shortfall(session, chosen.cluster_id)
            if why is not None:
                raise NoValidHost(why)
        return chosen

    @staticmethod
    def _claim_first(
        session: Session, hosts: list[HostState], req: PlacementRequest
    ) -> Host | None:
        """Claim the request on the best of ``hosts`` that still has room."""
        for host in order(hosts, req):
            if claims.claim(session, host, req):
                # one SELECT, the claimed counters included
                chosen = session.get(Host, host.id, populate_existing=True)
                assert chosen is not None
                return chosen
        return None
