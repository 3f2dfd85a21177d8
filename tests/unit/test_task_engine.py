import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from nubis.db.models import Controller, Task, utcnow
from nubis.db.session import Database
from nubis.services.core.errors import Conflict, NotFoundError
from nubis.services.core.principal import Principal
from nubis.services.core.submit import cancel_task
from nubis.services.identity import policy
from nubis.tasks.engine import CANCELLED, INTERRUPTED, TaskContext, TaskEngine, TaskLost


class Recorder:
    def __init__(self, kind: str, resumable: bool = True, fail: bool = False) -> None:
        self.kind = kind
        self.steps = ("work",)
        self.resumable = resumable
        self.fail = fail
        self.runs: list[str] = []
        self.failures: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def run(self, ctx: TaskContext) -> None:
        ctx.step("work", 50)
        with self.lock:
            self.runs.append(ctx.task_id)
        if self.fail:
            raise RuntimeError("the host said no")

    def failed(self, ctx: TaskContext, error: str) -> None:
        self.failures.append((ctx.task_id, error))


def wait_all_done(db: Database, timeout: float = 30) -> list[Task]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with db.begin() as s:
            tasks = s.scalars(select(Task)).all()
        if all(t.status in ("succeeded", "failed") for t in tasks):
            return list(tasks)
        time.sleep(0.05)
    raise AssertionError("tasks did not finish")


def submit(db: Database, engine: TaskEngine, kind: str, n: int) -> list[str]:
    ids = []
    with db.begin() as s:
        for i in range(n):
            ids.append(engine.submit(s, kind, "thing", f"r{i}").id)
    engine.wake()
    return ids


def test_every_task_runs_exactly_once_with_concurrent_workers(db):
    engine = TaskEngine(db, workers=4)
    handler = Recorder("thing.work")
    engine.register(handler)
    ids = submit(db, engine, "thing.work", 40)
    engine.start()
    try:
        tasks = wait_all_done(db)
    finally:
        engine.stop()
    assert sorted(handler.runs) == sorted(ids)
    assert all(t.status == "succeeded" and t.progress == 100 for t in tasks)
    assert all(t.attempts == 1 and t.started_at and t.finished_at for t in tasks)


def test_a_failing_task_records_the_error_and_runs_its_cleanup(db):
    engine = TaskEngine(db, workers=1)
    handler = Recorder("thing.fail", fail=True)
    engine.register(handler)
    [task_id] = submit(db, engine, "thing.fail", 1)
    engine.start()
    try:
        [task] = wait_all_done(db)
    finally:
        engine.stop()
    assert task.status == "failed"
    assert task.error == "the host said no"
    assert handler.failures == [(task_id, "the host said no")]


def test_recovery_requeues_resumable_and_fails_the_others(db):
    engine = TaskEngine(db, workers=1)
    resumable = Recorder("thing.resume", resumable=True)
    once = Recorder("thing.once", resumable=False)
    engine.register(resumable)
    engine.register(once)
    with db.begin() as s:  # what a process killed mid-task leaves behind
        a = engine.submit(s, "thing.resume", "thing", "a")
        b = engine.submit(s, "thing.once", "thing", "b")
        a.status = b.status = "running"
        a.attempts = b.attempts = 1
    engine.recover()
    with db.begin() as s:
        assert s.get(Task, a.id).status == "queued"
        failed = s.get(Task, b.id)
        assert failed.status == "failed" and failed.error == INTERRUPTED
    assert once.failures == [(b.id, INTERRUPTED)]
    engine.start()
    try:
        wait_all_done(db)
    finally:
        engine.stop()
    assert resumable.runs == [a.id]


def test_unknown_task_kind_is_refused_at_submit(db):
    engine = TaskEngine(db)
    with pytest.raises(KeyError), db.begin() as s:
        engine.submit(s, "no.such.kind", "thing", "x")


def test_steps_are_declared_and_a_fault_fires_on_the_first_attempt_only(db, tmp_path):
    fault = tmp_path / "fault"
    fault.write_text("demo:work:raise")
    engine = TaskEngine(db, workers=0, fault_inject=f"@{fault}")
    handler = Recorder("demo")
    engine.register(handler)
    with db.begin() as s:
        task = engine.submit(s, "demo", "thing", "t-1")
        task.attempts, task.worker = 1, engine.worker_id  # claimed by this controller
        s.flush()
        first = TaskContext(engine, task)
    with pytest.raises(RuntimeError, match="fault injected at demo:work"):
        first.step("work", 10)
    with pytest.raises(RuntimeError, match="no declared step 'other'"):
        first.step("other", 10)
    with db.begin() as s:
        task = s.get(Task, first.task_id)
        task.attempts = 2
        s.flush()
        again = TaskContext(engine, task)
    again.step("work", 10)  # a task run again after a crash is not crashed again
    fault.write_text("")
    first.step("work", 10)  # disarmed


class Copier(Recorder):
    """A long task that reports progress until it is cancelled (or gives up)."""

    def __init__(self, kind: str, cancellable: bool) -> None:
        super().__init__(kind)
        self.cancellable = cancellable
        self.started = threading.Event()

    def run(self, ctx: TaskContext) -> None:
        ctx.step("work", 10)
        self.started.set()
        for done in range(11, 100):
            ctx.progress(done)
            time.sleep(0.05)


def test_a_cancelled_task_stops_at_its_next_report_and_undoes_its_work(db):
    engine = TaskEngine(db, workers=2)
    copier, stubborn = Copier("thing.copy", True), Copier("thing.stubborn", False)
    engine.register(copier)
    engine.register(stubborn)
    [copy_id] = submit(db, engine, "thing.copy", 1)
    [stubborn_id] = submit(db, engine, "thing.stubborn", 1)
    owner = Principal("u", "u", "p", None, policy.SYSTEM_ADMIN)  # submit() records no project
    engine.start()
    try:
        assert copier.started.wait(10) and stubborn.started.wait(10)
        with db.begin() as s:
            assert cancel_task(engine, s, owner, copy_id).cancel_requested
            with pytest.raises(Conflict, match="cannot be cancelled"):
                cancel_task(engine, s, owner, stubborn_id)
            with pytest.raises(NotFoundError):
                cancel_task(engine, s, owner, "no-such-task")
        tasks = {t.id: t for t in wait_all_done(db)}
    finally:
        engine.stop()
    assert (tasks[copy_id].status, tasks[copy_id].error) == ("failed", CANCELLED)
    assert tasks[copy_id].progress < 99
    assert copier.failures == [(copy_id, CANCELLED)]
    assert tasks[stubborn_id].status == "succeeded" and stubborn.failures == []
    with db.begin() as s, pytest.raises(Conflict, match="has ended"):
        cancel_task(engine, s, owner, copy_id)


class Holder(Recorder):
    """A task that, on the controller named ``holds_on``, waits at its step until
    ``release`` is set; elsewhere it runs straight through."""

    def __init__(self, kind: str, holds_on: str) -> None:
        super().__init__(kind)
        self.holds_on = holds_on
        self.holding = threading.Event()
        self.release = threading.Event()
        self.lost: list[str] = []

    def run(self, ctx: TaskContext) -> None:
        ctx.step("work", 10)
        if ctx.engine.worker_id == self.holds_on:
            self.holding.set()
            self.release.wait(30)
            try:
                ctx.step("work", 50)
            except TaskLost:
                self.lost.append(ctx.engine.worker_id)
                raise
        with self.lock:
            self.runs.append(ctx.engine.worker_id)


def controllers(db: Database, handler: Recorder, *ids: str, takeover: float = 2.0):
    engines = [TaskEngine(db, workers=1, controller_id=i, takeover_seconds=takeover) for i in ids]
    for engine in engines:
        engine.register(handler)
    return engines


def test_a_dead_controllers_task_is_taken_over_once_its_lease_passes(db):
    handler = Holder("thing.hold", holds_on="ctl-a")
    a, b = controllers(db, handler, "ctl-a", "ctl-b")
    [task_id] = submit(db, a, "thing.hold", 1)
    a.recover()
    a.start()
    assert handler.holding.wait(10)
    b.recover()
    b.start()
    try:
        time.sleep(2.5)  # longer than the lease: a renews it, b must not take the task
        with db.begin() as s:
            assert (s.get(Task, task_id).status, s.get(Task, task_id).worker) == (
                "running",
                "ctl-a",
            )
        a.stop(timeout=0)  # a stops renewing, as if it died; its handler is stuck
        died = time.monotonic()
        [task] = wait_all_done(db, timeout=10)
        took = time.monotonic() - died
        print(f"taken over and finished {took:.1f} s after the controller stopped")
        assert took < 2.0 + 1.5  # the takeover time, then the run
        handler.release.set()  # the old controller wakes up: the task is no longer its
        deadline = time.monotonic() + 10
        while not handler.lost and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        handler.release.set()
        a.stop()
        b.stop()
    assert (task.status, task.worker, task.attempts) == ("succeeded", "ctl-b", 2)
    assert handler.runs == ["ctl-b"] and handler.lost == ["ctl-a"]
    assert handler.failures == []  # nothing undone: the task was resumed, not failed
    with db.begin() as s:  # the old controller did not end it again
        assert s.get(Task, task_id).status == "succeeded"


def test_a_task_queued_on_one_controller_starts_at_once_on_another(db):
    """On PostgreSQL the queueing transaction notifies every controller: an idle worker
    of another starts the task at once, not at its next idle look (a minute here)."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("several controllers share a PostgreSQL database only")
    handler = Recorder("thing.wake")
    queuer, runner = controllers(db, handler, "ctl-a", "ctl-b", takeover=600)
    runner.idle_poll = 60
    runner.start()
    try:
        assert runner.listener is not None and runner.listener.listening.wait(10)
        time.sleep(0.2)  # its workers have looked once and wait
        with db.begin() as s:  # the queueing controller runs no workers
            queuer.submit(s, "thing.wake", "thing", "r1")
        [task] = wait_all_done(db, timeout=10)
    finally:
        runner.stop()
    assert (task.status, task.worker) == ("succeeded", "ctl-b")


def test_a_restarted_controller_takes_back_its_own_tasks_at_once_and_no_one_elses(db):
    handler = Recorder("thing.resume")
    mine, other = controllers(db, handler, "ctl-a", "ctl-b", takeover=600)
    with db.begin() as s:  # what ctl-a left when it was killed; its lease still holds
        task = mine.submit(s, "thing.resume", "thing", "a")
        task.status, task.attempts, task.worker = "running", 1, "ctl-a"
        task.lease_until = utcnow() + timedelta(minutes=5)
    assert other.recover() == []  # another controller waits for the lease to pass
    assert mine.recover() == [task.id]  # ctl-a restarted: no need to wait
    with db.begin() as s:
        assert s.get(Task, task.id).status == "queued"
        assert {c.id for c in s.scalars(select(Controller))} == {"ctl-a", "ctl-b"}


class Outage(Recorder):
    """A task that loses the database at its first attempt (every write fails)."""

    def run(self, ctx: TaskContext) -> None:
        ctx.step("work", 10)
        if ctx.attempt == 1:
            raise OperationalError("UPDATE tasks ...", {}, ConnectionError("connection refused"))
        with self.lock:
            self.runs.append(ctx.task_id)


def test_a_task_that_loses_the_database_pauses_and_resumes_after_its_lease(db):
    handler = Outage("thing.outage")
    [engine] = controllers(db, handler, "ctl-a")
    [task_id] = submit(db, engine, "thing.outage", 1)
    engine.recover()
    engine.start()
    try:
        [task] = wait_all_done(db, timeout=15)  # once its lease passed, taken back
    finally:
        engine.stop()
    assert (task.status, task.attempts, task.error) == ("succeeded", 2, None)
    assert handler.runs == [task_id] and handler.failures == []  # nothing was undone


def test_a_controller_never_takes_over_a_task_it_is_still_running(db):
    handler = Holder("thing.hold", holds_on="ctl-a")
    [engine] = controllers(db, handler, "ctl-a", takeover=600)  # no renewal meanwhile
    [task_id] = submit(db, engine, "thing.hold", 1)
    engine.recover()
    engine.start()
    try:
        assert handler.holding.wait(10)
        with db.begin() as s:  # its renewal came late (a stalled heartbeat)
            s.get(Task, task_id).lease_until = utcnow() - timedelta(seconds=1)
        assert engine.take_over() == []
        handler.release.set()
        [task] = wait_all_done(db)
    finally:
        handler.release.set()
        engine.stop()
    assert (task.status, task.attempts) == ("succeeded", 1) and handler.runs == ["ctl-a"]
