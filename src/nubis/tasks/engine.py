"""The durable task engine: task rows in the database, claimed atomically by worker threads.

Life of a task: ``queued -> running -> succeeded | failed``. A handler's steps are
idempotent. Several controllers (``nubis serve`` processes) may share one database:
each claims queued tasks with a compare-and-swap and holds what it runs with a
*lease* it renews while it lives (``lease_until``). A task whose lease has passed
was left by a dead controller: another one takes it over (``take_over``), as this
one does at start-up with the tasks it ran before a crash (``recover``), and either
runs it again (resumable handlers, from their recorded step) or fails it and lets
the handler put its resource back into a true state. A controller whose task was
taken over (it lost the database for longer than the lease) finds out at the task's
next step or progress report (``TaskLost``) and stops without touching it again.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from nubis.db.models import Controller, Task, TaskStatus, new_id, utcnow
from nubis.db.session import Database, changed_one
from nubis.tasks import heartbeats, wakeups
from nubis.tasks.host_shares import PREFIX as HOST_LEASE
from nubis.tasks.leadership import Leadership

log = logging.getLogger(__name__)

INTERRUPTED = "interrupted by a control-plane restart"
CANCELLED = "cancelled on request"
# a worker looks at the oldest two queued tasks: it takes one and, if there is another,
# wakes the next worker
CLAIM_CANDIDATES = 2
TAKEOVER_SECONDS = 30.0  # a dead controller's tasks are taken over within this


class TaskLost(Exception):
    """Raised in a handler at its step or progress report when its task is no longer
    this controller's: its lease passed and another controller took it over."""

    def __init__(self, task_id: str) -> None:
        super().__init__(f"task {task_id} was taken over by another controller")


class TaskCancelled(Exception):
    """Raised in a cancellable handler at the step or progress report after its task
    was asked to stop; the task fails with ``CANCELLED`` once ``failed`` undid it."""

    def __init__(self) -> None:
        super().__init__(CANCELLED)


@dataclass(frozen=True)
class ControllerView:
    """A controller as operators see it: alive while its heartbeat is recent."""

    id: str
    address: str
    started_at: datetime
    heartbeat_at: datetime
    alive: bool
    running_tasks: int
    leads: list[str]  # the work only one controller does, done by this one
    hosts: int  # the hosts whose events and reconciliation this one handles
    this: bool  # the controller that answered


class TaskContext:
    """What a handler sees of its task: params, progress reporting, the database."""

    def __init__(self, engine: TaskEngine, task: Task) -> None:
        self.engine = engine
        self.db = engine.db
        self.task_id = task.id
        self.kind = task.kind
        self.resource_id = task.resource_id
        self.params: dict[str, Any] = dict(task.params or {})
        self.attempt = task.attempts
        # a cancellable handler turns this off where stopping would leave things
        # half-done (past its point of no return)
        self.may_cancel = True

    def step(self, name: str, progress: int) -> None:
        """Record the step about to run (one its handler declares); the fault-injection
        hook fires here. ``TaskLost`` if the task is no longer this controller's."""
        steps = getattr(self.engine.handlers.get(self.kind), "steps", ())
        if name not in steps:
            raise RuntimeError(f"{self.kind} has no declared step {name!r}")
        with self.db.begin() as s:
            held = changed_one(
                s,
                update(Task)
                .where(Task.id == self.task_id, Task.worker == self.engine.worker_id)
                .values(step=name, progress=progress),
            )
        if not held:
            raise TaskLost(self.task_id)
        if self.attempt <= 1:  # a task run again after a crash is not crashed again
            self.engine.fault_point(self.kind, name)
        self._stop_if_cancelled()

    def progress(self, progress: int) -> None:
        """Record how far the task has come; a cancellable task asked to stop stops
        here (``TaskCancelled``), a task another controller took over too (``TaskLost``)."""
        if not self.engine.report(self.task_id, progress):
            raise TaskLost(self.task_id)
        self._stop_if_cancelled()

    def _stop_if_cancelled(self) -> None:
        if not self.may_cancel:
            return
        if not getattr(self.engine.handlers.get(self.kind), "cancellable", False):
            return
        with self.db.read() as s:
            if s.scalar(select(Task.cancel_requested).where(Task.id == self.task_id)):
                raise TaskCancelled()


class TaskHandler(Protocol):
    @property
    def kind(self) -> str: ...

    @property
    def resumable(self) -> bool:
        """True: run() is idempotent and is run again after a crash."""

    @property
    def steps(self) -> tuple[str, ...]:
        """The names it passes to ctx.step, in order: every point a crash can interrupt
        it (the fault-injection test kills the control plane at each of them)."""

    def run(self, ctx: TaskContext) -> None: ...

    def failed(self, ctx: TaskContext, error: str) -> None:
        """Undo partial work and put the resource into a true state."""


class TaskEngine:
    def __init__(
        self,
        db: Database,
        workers: int = 4,
        fault_inject: str | None = None,
        controller_id: str | None = None,
        takeover_seconds: float = TAKEOVER_SECONDS,
        address: str = "",
    ) -> None:
        self.db = db
        self.workers = workers
        self.fault_inject = fault_inject
        self.handlers: dict[str, TaskHandler] = {}
        # the controller's id (kept across its restarts, so that it takes its own
        # interrupted tasks back at once), written into the tasks it runs
        self.worker_id = controller_id or new_id()
        self.address = address
        # a lease lasts 3/4 of the takeover time and is renewed every quarter of it;
        # expired leases are looked for as often: a dead controller's tasks are taken
        # over at most ``takeover_seconds`` after its last renewal
        self.lease = timedelta(seconds=takeover_seconds * 0.75)
        self.tick = takeover_seconds / 4
        # the loops that run on one controller at a time hold leases renewed with these
        self.leadership = Leadership(db, self.worker_id, self.lease)
        self._wake = threading.Condition()
        self._pending = 0
        # an idle worker looks for queued tasks this often even unwoken
        self.idle_poll = 2.0
        # tasks queued on other controllers wake this one's workers too (PostgreSQL)
        self.listener = (
            wakeups.Listener(db.url, self.wake) if wakeups.on_postgresql(db.url) else None
        )
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        # the tasks this process is running now: only their leases are renewed, so a
        # task its worker gave up on (the database was lost) is taken over once its
        # lease passes, by this controller or another
        self._running: set[str] = set()
        self._running_lock = threading.Lock()
        self.on_finished: list[Callable[[str, str], None]] = []

    def register(self, handler: TaskHandler) -> None:
        self.handlers[handler.kind] = handler

    # -- submitting -----------------------------------------------------------------
    def submit(
        self,
        session: Session,
        kind: str,
        resource_type: str,
        resource_id: str,
        params: dict[str, Any] | None = None,
        project_id: str | None = None,
        user_id: str | None = None,
    ) -> Task:
        """Add a queued task in the caller's transaction; workers wake when it commits."""
        task = self._new(kind, resource_type, resource_id, params, project_id, user_id)
        session.add(task)
        session.info["nubis_wake_tasks"] = True
        wakeups.announce(session)
        return task

    def _new(
        self,
        kind: str,
        resource_type: str,
        resource_id: str,
        params: dict[str, Any] | None,
        project_id: str | None,
        user_id: str | None,
    ) -> Task:
        if kind not in self.handlers:
            raise KeyError(f"no handler for task kind {kind!r}")
        return Task(
            id=new_id(),
            kind=kind,
            resource_type=resource_type,
            resource_id=resource_id,
            params=params or {},
            project_id=project_id,
            user_id=user_id,
        )

    def begin_inline(
        self,
        session: Session,
        kind: str,
        resource_type: str,
        resource_id: str,
        params: dict[str, Any] | None = None,
        project_id: str | None = None,
        user_id: str | None = None,
    ) -> Task:
        """A task its caller runs itself (a transfer inside an HTTP request), recorded
        as running from the start: it shows its progress like any task, ends with
        ``finish``, and if this process dies first, ``recover()`` fails it and its
        handler's ``failed`` cleans up."""
        task = self._new(kind, resource_type, resource_id, params, project_id, user_id)
        task.status = TaskStatus.RUNNING
        task.worker = self.worker_id
        task.lease_until = self._lease_end()
        task.started_at = utcnow()
        task.attempts = 1
        session.add(task)
        self._track(task.id, True)
        return task

    def fault_point(self, kind: str, step: str) -> None:
        """Test hook (``fault_inject`` = ``kind:step``): exit the process here, as a
        kill would; ``kind:step:raise`` makes the step fail instead. ``@<file>``: the
        hook is read from that file each time (a test arms one point after another)."""
        fault = self.fault_inject or ""
        if fault.startswith("@"):
            try:
                fault = Path(fault[1:]).read_text().strip()
            except OSError:
                fault = ""
        if fault == f"{kind}:{step}":
            log.error("fault injection: exiting at %s:%s", kind, step)
            logging.shutdown()
            os._exit(137)
        if fault == f"{kind}:{step}:raise":
            raise RuntimeError(f"fault injected at {kind}:{step}")

    def report(self, task_id: str, progress: int) -> bool:
        """Record how far a task has come (0-100); False if it is no longer this
        controller's."""
        with self.db.begin() as s:
            held = changed_one(
                s,
                update(Task)
                .where(Task.id == task_id, Task.worker == self.worker_id)
                .values(progress=progress),
            )
        return held

    def finish(self, task_id: str, error: str | None = None) -> None:
        """End a task begun with ``begin_inline``: succeeded, or failed with ``error``."""
        try:
            self._finish(
                task_id, TaskStatus.SUCCEEDED if error is None else TaskStatus.FAILED, error
            )
        finally:
            self._track(task_id, False)

    def _track(self, task_id: str, running: bool) -> None:
        with self._running_lock:
            if running:
                self._running.add(task_id)
            else:
                self._running.discard(task_id)

    def wake(self) -> None:
        """A task may be waiting: one idle worker looks (not all of them: a worker
        that finds more than the one it takes wakes the next)."""
        with self._wake:
            self._pending += 1
            self._wake.notify()

    def _wake_all(self) -> None:
        with self._wake:
            self._wake.notify_all()

    # -- workers --------------------------------------------------------------------
    def start(self) -> None:
        self._stop.clear()
        loops: list[tuple[str, Callable[[], None]]] = [
            (f"task-worker-{i}", self._loop) for i in range(self.workers)
        ]
        loops += [("task-leases", self._renew_loop), ("task-takeover", self._takeover_loop)]
        for name, target in loops:
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        if self.listener is not None:
            self.listener.start()
        self.wake()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self.listener is not None:
            self.listener.stop(timeout)
        self._wake_all()
        for t in self._threads:
            t.join(timeout)
        self._threads.clear()
        try:
            self.leadership.release()
            with self.db.begin() as s:  # stopped, not dead: it leaves the list
                s.execute(delete(Controller).where(Controller.id == self.worker_id))
        except Exception:
            log.exception("handing back the leases failed")

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                ctx = self._claim()
            except Exception:
                log.exception("claiming a task failed")
                ctx = None
            if ctx is None:
                with self._wake:
                    if self._pending == 0:
                        self._wake.wait(timeout=self.idle_poll)
                    self._pending = max(0, self._pending - 1)
                continue
            try:
                self._execute(ctx)
            except Exception:  # the database went away while the task ended
                log.exception("task %s could not be ended: it is taken over later", ctx.task_id)

    def _claim(self) -> TaskContext | None:
        """Take the oldest queued task with a compare-and-swap on its status (on
        PostgreSQL, rows another worker is claiming are skipped); if another is
        queued behind it, wake the next worker."""
        with self.db.begin() as s:
            candidates = s.scalars(
                select(Task.id)
                .where(Task.status == TaskStatus.QUEUED)
                .order_by(Task.created_at)
                .limit(CLAIM_CANDIDATES)
                .with_for_update(skip_locked=True)
            ).all()
            ctx, more = None, False
            for i, task_id in enumerate(candidates):
                claimed = changed_one(
                    s,
                    update(Task)
                    .where(Task.id == task_id, Task.status == TaskStatus.QUEUED)
                    .values(
                        status=TaskStatus.RUNNING,
                        worker=self.worker_id,
                        lease_until=self._lease_end(),
                        started_at=utcnow(),
                        attempts=Task.attempts + 1,
                    ),
                )
                if claimed:
                    task = s.get(Task, task_id)
                    assert task is not None
                    ctx = TaskContext(self, task)
                    more = i + 1 < len(candidates)
                    break
        if more:
            self.wake()
        return ctx

    def _execute(self, ctx: TaskContext) -> None:
        task_id = ctx.task_id
        handler = self.handlers[ctx.kind]
        self._track(task_id, True)
        try:
            self._run(handler, ctx)
        finally:
            self._track(task_id, False)

    def _run(self, handler: TaskHandler, ctx: TaskContext) -> None:
        task_id = ctx.task_id
        try:
            handler.run(ctx)
        except TaskLost:
            log.warning("task %s (%s) was taken over by another controller", task_id, ctx.kind)
        except OperationalError as exc:
            # the database cannot be reached: nothing is undone (that needs it too); the
            # task keeps its recorded step and is resumed, or failed and undone, when
            # its lease passes and the database is back, as after a crash
            log.warning("task %s (%s) paused: the database is unreachable (%s)",
                        task_id, ctx.kind, exc.orig)  # fmt: skip
        except Exception as exc:
            error = str(exc) or exc.__class__.__name__
            log.warning("task %s (%s) failed: %s", task_id, ctx.kind, error)
            try:
                handler.failed(ctx, error)
            except Exception:
                log.exception("clean-up of failed task %s failed", task_id)
            self._finish(task_id, TaskStatus.FAILED, error)
        else:
            self._finish(task_id, TaskStatus.SUCCEEDED, None)

    def _finish(self, task_id: str, status: str, error: str | None) -> None:
        with self.db.begin() as s:
            values: dict[str, Any] = {"status": status, "error": error, "finished_at": utcnow()}
            if status == TaskStatus.SUCCEEDED:
                values["progress"] = 100
            held = changed_one(
                s,
                update(Task)
                .where(Task.id == task_id, Task.worker == self.worker_id)
                .values(lease_until=None, **values),
            )
        if not held:
            log.warning("task %s was taken over by another controller: not ended here", task_id)
            return
        for listener in self.on_finished:
            listener(task_id, status)

    # -- leases ---------------------------------------------------------------------
    def _lease_end(self) -> datetime:
        return utcnow() + self.lease

    def heartbeat(self) -> None:
        """Renew the leases of the tasks this controller runs and of the work it leads,
        and its heartbeat."""
        now = utcnow()
        with self._running_lock:
            running = set(self._running)
        with self.db.begin() as s:
            if running:
                s.execute(
                    update(Task)
                    .where(
                        Task.id.in_(running),
                        Task.worker == self.worker_id,
                        Task.status == TaskStatus.RUNNING,
                    )
                    .values(lease_until=now + self.lease)
                )
            heartbeats.beat(s, self.worker_id, self.address, now)
        self.leadership.renew()

    def _renew_loop(self) -> None:
        self._every_tick(self.heartbeat, "renewing the task leases")

    def _takeover_loop(self) -> None:
        self._every_tick(self.take_over, "taking over the tasks of dead controllers")

    def _every_tick(self, job: Callable[[], object], what: str) -> None:
        while not self._stop.wait(self.tick):
            try:
                job()
            except OperationalError as exc:  # one line while the database is away
                log.warning("%s failed: the database is unreachable (%s)", what, exc.orig)
            except Exception:
                log.exception("%s failed", what)

    def take_over(self, own: bool = False) -> list[str]:
        """Take the running tasks whose lease has passed (and with ``own`` those this
        controller ran before it restarted): each is claimed with a compare-and-swap on
        its worker and lease, so that one controller only takes it, then run again or
        failed as its handler allows. Their ids."""
        now = utcnow()
        expired = or_(Task.lease_until.is_(None), Task.lease_until < now)
        if own:
            expired = or_(expired, Task.worker == self.worker_id)
        with self.db.begin() as s:
            left = s.execute(
                select(Task.id, Task.worker, Task.lease_until).where(
                    Task.status == TaskStatus.RUNNING, expired
                )
            ).all()
        with self._running_lock:
            # a task this process runs is its own even if its lease was not renewed in
            # time (a stalled heartbeat): running it again here would run it twice
            running = set(self._running)
        taken = []
        for task_id, worker, lease_until in left:
            if task_id in running:
                continue
            with self.db.begin() as s:
                claimed = changed_one(
                    s,
                    update(Task)
                    .where(
                        Task.id == task_id,
                        Task.status == TaskStatus.RUNNING,
                        Task.worker.is_(None) if worker is None else Task.worker == worker,
                        Task.lease_until.is_(None)
                        if lease_until is None
                        else Task.lease_until == lease_until,
                    )
                    .values(worker=self.worker_id, lease_until=self._lease_end()),
                )
                task = s.get(Task, task_id) if claimed else None
            if task is None:
                continue  # another controller took it first, or it ended meanwhile
            if worker != self.worker_id:
                log.warning("taking over task %s (%s) of controller %s", task_id, task.kind, worker)
            self._resume(task)
            taken.append(task_id)
        if taken:
            self.wake()
        return taken

    def _resume(self, task: Task) -> None:
        handler = self.handlers.get(task.kind)
        if handler is not None and handler.resumable and task.attempts < 3:
            log.warning("re-queueing interrupted task %s (%s)", task.id, task.kind)
            with self.db.begin() as s:
                s.execute(
                    update(Task)
                    .where(Task.id == task.id, Task.worker == self.worker_id)
                    .values(status=TaskStatus.QUEUED, lease_until=None)
                )
            return
        log.warning("failing interrupted task %s (%s)", task.id, task.kind)
        if handler is not None:
            try:
                handler.failed(TaskContext(self, task), INTERRUPTED)
            except Exception:
                log.exception("recovery of task %s failed", task.id)
        self._finish(task.id, TaskStatus.FAILED, INTERRUPTED)

    def controllers(self) -> list[ControllerView]:
        """Every controller that ever shared the database, with the tasks it runs."""
        alive_since = heartbeats.alive_since(self.lease)
        leads: dict[str, list[str]] = {}
        hosts: dict[str, int] = {}
        for name, holder in sorted(self.leadership.holders().items()):
            if name.startswith(HOST_LEASE):
                hosts[holder] = hosts.get(holder, 0) + 1
            else:
                leads.setdefault(holder, []).append(name)
        with self.db.read() as s:
            counts = s.execute(
                select(Task.worker, func.count())
                .where(Task.status == TaskStatus.RUNNING)
                .group_by(Task.worker)
            )
            running = {worker: count for worker, count in counts}
            rows = s.scalars(select(Controller).order_by(Controller.started_at)).all()
            return [
                ControllerView(
                    c.id,
                    c.address,
                    c.started_at,
                    c.heartbeat_at,
                    c.heartbeat_at >= alive_since,
                    running.get(c.id, 0),
                    leads.get(c.id, []),
                    hosts.get(c.id, 0),
                    c.id == self.worker_id,
                )
                for c in rows
            ]

    def recover(self) -> list[str]:
        """Run once at start-up, before workers start: register this controller, and
        settle the tasks it left running before it restarted and those of controllers
        whose lease has passed (a single controller: every task left running)."""
        self.heartbeat()
        return self.take_over(own=True)
