"""Waking every controller's workers when a task is queued (PostgreSQL).

A task is queued in the transaction of the request that asks for it, on whichever
controller took the request; that controller's workers are woken when it commits.
The other controllers' workers would only find it at their next idle look. On
PostgreSQL the queueing transaction also sends a ``NOTIFY`` (delivered when it
commits, dropped when it rolls back) and each controller ``LISTEN``s on its own
connection, so an idle worker anywhere starts the task at once. SQLite has one
controller: nothing to do.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg
from sqlalchemy import make_url, text
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

CHANNEL = "nubis_tasks"
RECONNECT_SECONDS = 1.0
LOOK_SECONDS = 0.2  # how soon a stop is seen while waiting for notifications


def on_postgresql(url: str) -> bool:
    return make_url(url).get_backend_name() == "postgresql"


def announce(session: Session) -> None:
    """Tell every controller, when this transaction commits, that a task is queued."""
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        session.execute(text(f"NOTIFY {CHANNEL}"))


class Listener:
    """A thread that calls ``wake`` for each notification on the channel, and once
    after each (re)connection (what was sent while it was away is not kept)."""

    def __init__(self, url: str, wake: Callable[[], None]) -> None:
        # SQLAlchemy's URL as libpq takes it (its query, e.g. options=, carried over)
        self.conninfo = make_url(url).set(drivername="postgresql").render_as_string(False)
        self.wake = wake
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.listening = threading.Event()  # set while it listens

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="task-wakeups", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        failing = False
        while not self._stop.is_set():
            try:
                connect = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5)
                with connect as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    if failing:
                        log.info("listening for queued tasks again")
                    failing = False
                    self.wake()
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=LOOK_SECONDS):
                            self.wake()
            except psycopg.Error as exc:
                self.listening.clear()
                if not failing:
                    log.warning("not listening for queued tasks (%s); retrying", exc)
                failing = True
                self._stop.wait(RECONNECT_SECONDS)
