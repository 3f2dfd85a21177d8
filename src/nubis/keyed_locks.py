"""One lock per key (a host's URI, an image, a host's network), made on first use:
work on one key waits for the other work on that key, and only for it."""

from __future__ import annotations

import threading
from collections.abc import Hashable


class KeyedLocks:
    def __init__(self) -> None:
        self._locks: dict[Hashable, threading.Lock] = {}
        self._guard = threading.Lock()

    def __call__(self, key: Hashable) -> threading.Lock:
        """The lock of ``key`` (the same one every time)."""
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())
