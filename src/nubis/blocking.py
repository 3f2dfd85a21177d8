"""Calls that wait (libvirt, password hashing, qemu-img, the network) never run inside
a database write transaction.

On SQLite a write transaction locks the whole database: a libvirt call that takes
seconds inside one makes every other request wait, then fail with "database is
locked". ``nubis.db.session.Database.begin`` marks the thread as writing while its
transaction is open; every slow call starts with ``check``. In strict mode (the
tests set ``NUBIS_STRICT_TRANSACTIONS=1``) a slow call inside a write transaction
raises; otherwise it is logged once per kind, so a production server keeps serving.
This module depends on nothing, so the drivers can use it without knowing the
database.
"""

from __future__ import annotations

import logging
import os
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)
_state = threading.local()
_warned: set[str] = set()


class SlowCallInTransaction(RuntimeError):
    """A slow call was made while this thread held a database write transaction."""


def strict() -> bool:
    return os.environ.get("NUBIS_STRICT_TRANSACTIONS") == "1"


@contextmanager
def writing() -> Iterator[None]:
    """Mark this thread as inside a write transaction for the block."""
    _state.depth = getattr(_state, "depth", 0) + 1
    try:
        yield
    finally:
        _state.depth -= 1


def in_write_transaction() -> bool:
    return getattr(_state, "depth", 0) > 0


def check(what: str) -> None:
    """Called before a slow call: refuse it (strict) or log it inside a write
    transaction."""
    if not in_write_transaction():
        return
    if strict():
        raise SlowCallInTransaction(f"{what} inside a database write transaction")
    if what not in _warned:
        _warned.add(what)
        log.warning(
            "%s inside a database write transaction (other requests wait):\n%s",
            what,
            "".join(traceback.format_stack(limit=12)),
        )
