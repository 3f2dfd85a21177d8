"""Alarm rules: create, list, show, delete; acknowledge, silence, enable, disable;
and the notifications each one sent."""

from __future__ import annotations

from fastapi import APIRouter, Response
from sqlalchemy import select

from nubis.api.deps import PageDep, PlatformDep, PrincipalDep
from nubis.api.monitoring_schemas import (
    AlarmActionIn,
    AlarmCreated,
    AlarmIn,
    AlarmOut,
    NotificationOut,
)
from nubis.api.schemas import PageOut
from nubis.db.models.monitoring import AlarmRule, Notification
from nubis.services.core.lookup import paginate
from nubis.services.monitoring import webhooks
from nubis.services.monitoring.alarms import RuleRequest

router = APIRouter(prefix="/alarms", tags=["alarms"])


@router.get("")
def list_alarms(
    platform: PlatformDep, principal: PrincipalDep, pages: PageDep
) -> PageOut[AlarmOut]:
    with platform.db.read() as s:
        query = select(AlarmRule).filter_by(**principal.scope())
        return PageOut.of(paginate(s, query, AlarmRule, pages), AlarmOut)


@router.post("", status_code=201)
def create_alarm(body: AlarmIn, platform: PlatformDep, principal: PrincipalDep) -> AlarmCreated:
    """A rule on one instance (or, for the system administrator, one host); it starts
    in ``insufficient_data`` and is evaluated every collection interval."""
    if body.webhook_url is not None:  # resolved outside any transaction
        webhooks.check_url(platform.db, body.webhook_url)
    with platform.db.begin() as s:
        rule, secret = platform.alarms.create(s, principal, RuleRequest(**body.model_dump()))
        return AlarmCreated(**AlarmOut.model_validate(rule).model_dump(), webhook_secret=secret)


@router.get("/{ref}")
def get_alarm(ref: str, platform: PlatformDep, principal: PrincipalDep) -> AlarmOut:
    with platform.db.read() as s:
        return AlarmOut.model_validate(platform.alarms.get(s, principal, ref))


@router.delete("/{ref}", status_code=204)
def delete_alarm(ref: str, platform: PlatformDep, principal: PrincipalDep) -> Response:
    with platform.db.begin() as s:
        platform.alarms.delete(s, principal, ref)
    return Response(status_code=204)


@router.post("/{ref}/actions/{action}")
def alarm_action(
    ref: str,
    action: str,
    platform: PlatformDep,
    principal: PrincipalDep,
    body: AlarmActionIn | None = None,
) -> AlarmOut:
    """``acknowledge`` (an alarm someone is on), ``silence`` for ``seconds`` (states are
    still followed, nothing is sent), ``unsilence``, ``enable``, ``disable``."""
    seconds = body.seconds if body else None
    with platform.db.begin() as s:
        return AlarmOut.model_validate(platform.alarms.act(s, principal, ref, action, seconds))


@router.get("/{ref}/notifications")
def alarm_notifications(
    ref: str, platform: PlatformDep, principal: PrincipalDep
) -> list[NotificationOut]:
    """The messages about this rule's transitions, newest first, with delivery status."""
    with platform.db.read() as s:
        rule = platform.alarms.get(s, principal, ref)
        rows = s.scalars(
            select(Notification)
            .where(Notification.rule_id == rule.id)
            .order_by(Notification.created_at.desc())
            .limit(100)
        ).all()
        return [NotificationOut.model_validate(n) for n in rows]
