"""Alarm rules: create and manage them, and evaluate them every collection cycle.

A rule watches one metric of one instance or host: the samples of the last
``duration_seconds`` are aggregated (avg, min or max) and compared with the
threshold. Too few recent samples (the instance is stopped, the host is not
sampled) is ``insufficient_data``. Once in ``alarm``, a rule clears only when the
value is past the threshold by ``hysteresis`` (no flapping around the line).
``host_down`` is the host's own state: alarm once it has been down that long.

Every change of state is an event; a change into or out of ``alarm`` is also
written as a notification (webhook, e-mail) in the same transaction, for the
notifier to deliver, unless the rule is silenced.
"""

from __future__ import annotations

import json
import operator
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlparse

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from nubis.db.models import Host, HostStatus, Instance, utcnow
from nubis.db.models.monitoring import RAW, AlarmRule, Notification
from nubis.db.session import Database
from nubis.services.core import events
from nubis.services.core.errors import BadRequest, Forbidden
from nubis.services.core.lookup import get_by_id_or_name, validate_name
from nubis.services.core.principal import Principal
from nubis.services.identity import policy
from nubis.services.identity.secrets import SecretBox
from nubis.services.monitoring import metrics

HOST_DOWN = "host_down"
AGGREGATIONS: dict[str, Callable[[list[float]], float]] = {
    "avg": lambda v: sum(v) / len(v),
    "min": min,
    "max": max,
}
COMPARATORS: dict[str, Callable[[float, float], bool]] = {
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
}
ACTIONS = ("acknowledge", "silence", "unsilence", "enable", "disable")


@dataclass(frozen=True)
class RuleRequest:
    name: str
    resource_type: str
    resource: str
    metric: str
    threshold: float = 0.0
    comparator: str = "gt"
    aggregation: str = "avg"
    duration_seconds: int = 300
    hysteresis: float = 0.0
    webhook_url: str | None = None
    email: str | None = None


def metrics_by_kind() -> dict[str, list[str]]:
    """What a rule may watch, per resource type."""
    return {"instance": list(metrics.INSTANCE_METRICS), "host": [*metrics.HOST_METRICS, HOST_DOWN]}


def _check(req: RuleRequest, smtp_configured: bool) -> None:
    validate_name(req.name, "alarm")
    kinds = metrics_by_kind()
    if req.resource_type not in kinds:
        raise BadRequest("resource_type must be instance or host")
    if req.metric not in kinds[req.resource_type]:
        known = ", ".join(kinds[req.resource_type])
        raise BadRequest(f"metric must be one of {known} for a {req.resource_type}")
    if req.aggregation not in AGGREGATIONS:
        raise BadRequest(f"aggregation must be one of {', '.join(AGGREGATIONS)}")
    if req.comparator not in COMPARATORS:
        raise BadRequest(f"comparator must be one of {', '.join(COMPARATORS)}")
    if not 1 <= req.duration_seconds <= 86400:
        raise BadRequest("duration_seconds must be between 1 and 86400")
    if req.hysteresis < 0:
        raise BadRequest("hysteresis must not be negative")
    if req.webhook_url is not None:
        url = urlparse(req.webhook_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise BadRequest("webhook_url must be an http:// or https:// URL")
    if req.email is not None:
        if "@" not in req.email or len(req.email) > 255:
            raise BadRequest("email must be an e-mail address")
        if not smtp_configured:
            raise BadRequest("e-mail notifications need the server's smtp_host setting")


class AlarmService:
    def __init__(self, db: Database, box: SecretBox, smtp_configured: bool) -> None:
        self.db = db
        self.box = box
        self.smtp_configured = smtp_configured

    # -- management -------------------------------------------------------------------
    def create(
        self, session: Session, principal: Principal, req: RuleRequest
    ) -> tuple[AlarmRule, str | None]:
        """The new rule and its webhook signing secret (shown this once)."""
        _check(req, self.smtp_configured)
        if req.resource_type == "instance":
            instance = get_by_id_or_name(
                session, Instance, req.resource, "instance", **principal.scope()
            )
            resource_id, project_id = instance.id, instance.project_id
        else:
            if policy.SYSTEM_ADMIN not in principal.roles:
                raise Forbidden("only the system administrator watches hosts")
            host = get_by_id_or_name(session, Host, req.resource, "host")
            resource_id, project_id = host.id, None
        secret = secrets.token_urlsafe(32) if req.webhook_url else None
        host_down = req.metric == HOST_DOWN
        rule = AlarmRule(
            name=req.name,
            project_id=project_id,
            resource_type=req.resource_type,
            resource_id=resource_id,
            metric=req.metric,
            aggregation=req.aggregation,
            comparator="ge" if host_down else req.comparator,
            threshold=1.0 if host_down else req.threshold,
            hysteresis=0.0 if host_down else req.hysteresis,  # down is down: no margin
            duration_seconds=req.duration_seconds,
            webhook_url=req.webhook_url,
            webhook_secret=self.box.encrypt({"secret": secret}) if secret else None,
            email=req.email,
        )
        session.add(rule)
        session.flush()
        return rule, secret

    def get(self, session: Session, principal: Principal, ref: str) -> AlarmRule:
        return get_by_id_or_name(session, AlarmRule, ref, "alarm", **principal.scope())

    def delete(self, session: Session, principal: Principal, ref: str) -> None:
        _remove(session, self.get(session, principal, ref))

    def act(
        self, session: Session, principal: Principal, ref: str, action: str, seconds: int | None
    ) -> AlarmRule:
        if action not in ACTIONS:
            raise BadRequest(f"unknown alarm action {action!r}; actions are {', '.join(ACTIONS)}")
        rule = self.get(session, principal, ref)
        if action == "acknowledge":
            if rule.state != "alarm":
                raise BadRequest(f"alarm {rule.name!r} is {rule.state}: nothing to acknowledge")
            rule.acknowledged_at = utcnow()
        elif action == "silence":
            if seconds is None or not 1 <= seconds <= 30 * 86400:
                raise BadRequest("silence needs seconds, between 1 and 2592000")
            rule.silenced_until = utcnow() + timedelta(seconds=seconds)
        elif action == "unsilence":
            rule.silenced_until = None
        else:
            rule.enabled = action == "enable"
            if not rule.enabled:
                rule.state, rule.state_since = "insufficient_data", utcnow()
        return rule

    # -- evaluation -------------------------------------------------------------------
    def evaluate_all(self, now: float, interval: float) -> int:
        """Evaluate every enabled rule once; the number of state changes."""
        changed = 0
        with self.db.begin() as s:
            rules = s.scalars(select(AlarmRule).where(AlarmRule.enabled.is_(True))).all()
            watched = [r.resource_id for r in rules if r.resource_type == "instance"]
            alive = set(s.scalars(select(Instance.id).where(Instance.id.in_(watched))))
            for rule in rules:
                if rule.resource_type == "instance" and rule.resource_id not in alive:
                    events.record(
                        s,
                        "alarm.removed",
                        f"alarm {rule.name} removed: its instance was deleted",
                        "instance",
                        rule.resource_id,
                        project_id=rule.project_id,
                    )
                    _remove(s, rule)
                    changed += 1
                    continue
                value, breached = _measure(s, rule, now, interval)
                new = _decide(rule, value, breached)
                rule.last_value = value
                rule.evaluated_at = utcnow()
                if new != rule.state:
                    self._transition(s, rule, new, value)
                    changed += 1
        return changed

    def _transition(self, s: Session, rule: AlarmRule, new: str, value: float | None) -> None:
        old, at = rule.state, utcnow()
        rule.state, rule.state_since, rule.acknowledged_at = new, at, None
        shown = "no data" if value is None else f"{value:.2f}"
        events.record(
            s,
            f"alarm.{new}",
            f"alarm {rule.name}: {old} -> {new} ({rule.metric} {shown})",
            rule.resource_type,
            rule.resource_id,
            severity="warning" if new == "alarm" else "info",
            project_id=rule.project_id,
        )
        silenced = rule.silenced_until is not None and rule.silenced_until > at
        if "alarm" not in (old, new) or silenced:
            return
        for channel, target in (("webhook", rule.webhook_url), ("email", rule.email)):
            if target:
                note = Notification(rule_id=rule.id, channel=channel, target=target, payload="")
                s.add(note)
                s.flush()
                note.payload = json.dumps(_payload(note.id, rule, old, new, value, at))


def _remove(s: Session, rule: AlarmRule) -> None:
    """A rule goes with the messages about it that were not sent yet."""
    s.execute(delete(Notification).where(Notification.rule_id == rule.id))
    s.delete(rule)


def _payload(
    note_id: str, rule: AlarmRule, old: str, new: str, value: float | None, at: datetime
) -> dict[str, Any]:
    return {
        "id": note_id,
        "alarm": {
            "id": rule.id,
            "name": rule.name,
            "metric": rule.metric,
            "aggregation": rule.aggregation,
            "comparator": rule.comparator,
            "threshold": rule.threshold,
            "duration_seconds": rule.duration_seconds,
        },
        "resource": {"type": rule.resource_type, "id": rule.resource_id},
        "project_id": rule.project_id,
        "previous_state": old,
        "state": new,
        "value": value,
        "at": at.isoformat(),
    }


def _measure(
    s: Session, rule: AlarmRule, now: float, interval: float
) -> tuple[float | None, bool | None]:
    """(the aggregated value, whether it breaches); (None, None): not enough data."""
    if rule.metric == HOST_DOWN:
        host = s.get(Host, rule.resource_id)
        if host is None:
            return None, None
        if host.state == HostStatus.UP:  # unreachable counts: it is not serving
            return 0.0, False
        seen = host.last_seen_at.timestamp() if host.last_seen_at else 0.0
        return 1.0, now - seen >= rule.duration_seconds
    kind = metrics.INSTANCES if rule.resource_type == "instance" else metrics.HOSTS
    model = kind.model
    column = getattr(model, rule.metric)
    rows = s.execute(
        select(model.ts, column)
        .where(kind.key == rule.resource_id, model.resolution == RAW)
        .where(model.ts >= int(now - rule.duration_seconds), column.is_not(None))
    ).all()
    needed = max(1, int(rule.duration_seconds / interval / 2))
    if len(rows) < needed or max(r[0] for r in rows) < now - 3 * interval:
        return None, None
    value = AGGREGATIONS[rule.aggregation]([r[1] for r in rows])
    return value, COMPARATORS[rule.comparator](value, rule.threshold)


def _decide(rule: AlarmRule, value: float | None, breached: bool | None) -> str:
    if value is None or breached is None:
        return "insufficient_data"
    if rule.state == "alarm":  # clears only past the threshold by the hysteresis
        shift = -rule.hysteresis if rule.comparator in ("gt", "ge") else rule.hysteresis
        still = COMPARATORS[rule.comparator](value, rule.threshold + shift)
        return "alarm" if still else "ok"
    return "alarm" if breached else "ok"
