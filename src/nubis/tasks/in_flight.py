"""Operations that run inside an API call rather than as tasks, and mark their
resource as in flight in its row while they talk to the hosts (a storage pool
``creating`` or ``deleting``, a network ``creating``, ``adding`` or ``deleting``,
an image ``saving``, a router moving its gateway).

Each holds the lease ``<kind>:<id>`` (``Leadership``) from before it marks the
row until after it settles it; its controller's heartbeat renews the lease. When
the controller dies half-way the lease passes, and the clean-up that undoes
such half-done work (at every controller's start-up, and in the housekeeping
rounds) takes the lease over first (``orphans``): so it never undoes the work of
a controller that is still doing it, and two clean-ups never undo the same work.
A controller's own half-done work from before it restarted is its at once.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import contextmanager

from nubis.tasks.leadership import Leadership


class InFlight:
    def __init__(self, leadership: Leadership) -> None:
        self.leadership = leadership

    def begin(self, kind: str, resource_id: str) -> bool:
        """Hold the lease of an operation on the resource; False if another
        controller holds it (its operation, or its clean-up, is under way)."""
        return bool(self.leadership.take([f"{kind}:{resource_id}"], 1))

    def end(self, kind: str, resource_id: str) -> None:
        self.leadership.let_go([f"{kind}:{resource_id}"], forget=True)

    @contextmanager
    def running(self, kind: str, resource_id: str, busy: Exception) -> Iterator[None]:
        """The block is the operation: ``busy`` is raised when the lease is held."""
        if not self.begin(kind, resource_id):
            raise busy
        try:
            yield
        finally:
            self.end(kind, resource_id)

    @contextmanager
    def orphans(self, kind: str, resource_ids: Collection[str]) -> Iterator[set[str]]:
        """Of the resources found in flight, those whose operation is nobody's now
        (its controller died, or is this one before it restarted), held while the
        block undoes them. Read their rows again inside the block: an operation may
        have ended between the look and the taking."""
        names = {f"{kind}:{r}" for r in resource_ids}
        taken = self.leadership.take(names, len(names), reclaim=True)
        try:
            yield {name.split(":", 1)[1] for name in taken}
        finally:
            self.leadership.let_go(taken, forget=True)
