"""The durable task engine: task rows in the database, claimed atomically by worker threads.

Life of a task: ``queued -> running -> succeeded | failed``. A handler's steps are
idempotent; at start-up ``recover()`` finds tasks a dead process left ``running``
and either runs them again (resumable handlers) or fails them and lets the
handler put its resource back into a true state.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from nubis.db.models import Task, TaskStatus, new_id, utcnow
from nubis.db.session import Database

log = logging.getLogger(__name__)

INTERRUPTED = "interrupted by a control-plane restart"
CANCELLED = "cancelled on request"


class TaskCancelled(Exception):
    """Raised in a cancellable handler at the step or progress report after its task
    was asked to stop; the task fails with ``CANCELLED`` once ``failed`` undid it."""

    def __init__(self) -> None:
        super().__init__(CANCELLED)


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
        hook fires here."""
        steps = getattr(self.engine.handlers.get(self.kind), "steps", ())
        if name not in steps:
            raise RuntimeError(f"{self.kind} has no declared step {name!r}")
        with self.db.begin() as s:
            s.execute(
                update(Task).where(Task.id == self.task_id).values(step=name, progress=progress)
            )
        if self.attempt <= 1:  # a task run again after a crash is not crashed again
            self.engine.fault_point(self.kind, name)
        self._stop_if_cancelled()

    def progress(self, progress: int) -> None:
        """Record how far the task has come; a cancellable task asked to stop stops
        here (``TaskCancelled``)."""
        self.engine.report(self.task_id, progress)
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
    def __init__(self, db: Database, workers: int = 4, fault_inject: str | None = None) -> None:
        self.db = db
        self.workers = workers
        self.fault_inject = fault_inject
        self.handlers: dict[str, TaskHandler] = {}
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self._wake = threading.Condition()
        self._pending = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
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
        task.started_at = utcnow()
        task.attempts = 1
        session.add(task)
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

    def report(self, task_id: str, progress: int) -> None:
        """Record how far a task has come (0-100)."""
        with self.db.begin() as s:
            s.execute(update(Task).where(Task.id == task_id).values(progress=progress))

    def finish(self, task_id: str, error: str | None = None) -> None:
        """End a task begun with ``begin_inline``: succeeded, or failed with ``error``."""
        self._finish(task_id, TaskStatus.SUCCEEDED if error is None else TaskStatus.FAILED, error)

    def wake(self) -> None:
        with self._wake:
            self._pending += 1
            self._wake.notify_all()

    # -- workers --------------------------------------------------------------------
    def start(self) -> None:
        self._stop.clear()
        for i in range(self.workers):
            t = threading.Thread(target=self._loop, name=f"task-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        self.wake()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.wake()
        for t in self._threads:
            t.join(timeout)
        self._threads.clear()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                task_id = self._claim()
            except Exception:
                log.exception("claiming a task failed")
                task_id = None
            if task_id is None:
                with self._wake:
                    if self._pending == 0:
                        self._wake.wait(timeout=2.0)
                    self._pending = max(0, self._pending - 1)
                continue
            self._execute(task_id)

    def _claim(self) -> str | None:
        """Take the oldest queued task with a compare-and-swap on its status."""
        with self.db.begin() as s:
            candidates = s.scalars(
                select(Task.id)
                .where(Task.status == TaskStatus.QUEUED)
                .order_by(Task.created_at)
                .limit(8)
            ).all()
            for task_id in candidates:
                claimed = s.execute(
                    update(Task)
                    .where(Task.id == task_id, Task.status == TaskStatus.QUEUED)
                    .values(
                        status=TaskStatus.RUNNING,
                        worker=self.worker_id,
                        started_at=utcnow(),
                        attempts=Task.attempts + 1,
                    )
                ).rowcount
                if claimed == 1:
                    return task_id
        return None

    def _execute(self, task_id: str) -> None:
        with self.db.begin() as s:
            task = s.get(Task, task_id)
            assert task is not None
            ctx = TaskContext(self, task)
        handler = self.handlers[ctx.kind]
        try:
            handler.run(ctx)
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
            s.execute(update(Task).where(Task.id == task_id).values(**values))
        for listener in self.on_finished:
            listener(task_id, status)

    # -- recovery -------------------------------------------------------------------
    def recover(self) -> list[str]:
        """Run once at start-up, before workers start: settle tasks left ``running``."""
        with self.db.begin() as s:
            left = s.scalars(select(Task).where(Task.status == TaskStatus.RUNNING)).all()
        recovered = []
        for task in left:
            handler = self.handlers.get(task.kind)
            if handler is not None and handler.resumable and task.attempts < 3:
                log.warning("re-queueing interrupted task %s (%s)", task.id, task.kind)
                with self.db.begin() as s:
                    s.execute(
                        update(Task).where(Task.id == task.id).values(status=TaskStatus.QUEUED)
                    )
            else:
                log.warning("failing interrupted task %s (%s)", task.id, task.kind)
                if handler is not None:
                    try:
                        handler.failed(TaskContext(self, task), INTERRUPTED)
                    except Exception:
                        log.exception("recovery of task %s failed", task.id)
                self._finish(task.id, TaskStatus.FAILED, INTERRUPTED)
            recovered.append(task.id)
        return recovered
