"""Periodic clean-up: audit records and events past retention; expired tokens, used
signatures, console tickets, approvals and login throttling (kept off the request
paths that make them); controllers that died long ago; and what other services add
to ``also`` (e.g. the copies of deleted images left in RBD pools)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import delete, select

from nubis.db.models import (
    Approval,
    ConsoleTicket,
    Controller,
    Task,
    TaskStatus,
    Token,
    UsedSignature,
    utcnow,
)
from nubis.db.session import Database
from nubis.services.core import events
from nubis.services.identity import audit, throttle

log = logging.getLogger(__name__)
# a controller silent this long is gone for good: it leaves the controllers' list
# (unless a task it ran is still recorded as running)
CONTROLLER_FORGOTTEN = timedelta(days=7)


class Housekeeping:
    def __init__(
        self,
        db: Database,
        audit_retention_days: int,
        events_retention_days: int = 90,
        interval: float = 3600,
        login_throttle: throttle.ThrottleSettings = throttle.ThrottleSettings(),
    ) -> None:
        self.login_throttle = login_throttle
        self.db = db
        self.retention_days = audit_retention_days
        self.events_retention_days = events_retention_days
        self.interval = interval
        self.also: list[Callable[[], object]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # whether this controller runs the loop's next round (one controller at a
        # time when several share the database: Leadership.gate)
        self.lead: Callable[[], bool] = lambda: True

    def run_once(self) -> None:
        with self.db.begin() as s:
            pruned = audit.prune(s, self.retention_days)
            events.prune(s, self.events_retention_days)
            now = utcnow()
            for model in (Token, UsedSignature, ConsoleTicket, Approval):
                s.execute(delete(model).where(model.expires_at < now))
            throttle.forget_old(s, self.login_throttle)
            holding = select(Task.worker).where(Task.status == TaskStatus.RUNNING)
            s.execute(
                delete(Controller).where(
                    Controller.heartbeat_at < now - CONTROLLER_FORGOTTEN,
                    Controller.id.not_in(holding),
                )
            )
        if pruned:
            log.info("removed %d audit record(s) older than %d days", pruned, self.retention_days)

    def _loop(self) -> None:
        while True:
            try:
                leading = self.lead()
            except Exception:  # a database hiccup: try again next round
                leading = False
                log.exception("housekeeping: the lease could not be taken")
            try:
                if leading:
                    self.run_once()
            except Exception:  # a database hiccup: try again next round
                log.exception("housekeeping failed")
            for job in self.also if leading else []:
                try:
                    job()
                except Exception:
                    log.exception("housekeeping: %s failed", job)
            if self._stop.wait(self.interval):
                return

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="housekeeping", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
