"""A controller's row in the registry of controllers: its heartbeat."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session

from nubis.db.models import Controller, utcnow
from nubis.db.session import changed_one


def beat(session: Session, controller_id: str, address: str, now: datetime | None = None) -> None:
    """Record that the controller is alive (its row made the first time)."""
    now = now or utcnow()
    statement = (
        update(Controller)
        .where(Controller.id == controller_id)
        .values(heartbeat_at=now, address=address)
    )
    if not changed_one(session, statement):
        session.add(Controller(id=controller_id, address=address, heartbeat_at=now))


def alive_since(lease: timedelta) -> datetime:
    """A controller is alive while its last heartbeat is no older than one lease
    (three quarters of the takeover time; it beats every quarter): the heartbeats
    since this instant."""
    return utcnow() - lease
