"""The task queue, the controllers that run it and the work only one of them does at a
time, and the first-run steps done once per installation."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from nubis.db.models.base import Base, new_id, utcnow


class TaskStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (
        Index("ix_tasks_status_created", "status", "created_at"),
        Index("ix_tasks_resource", "resource_type", "resource_id"),
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(32))  # instance.create, instance.stop, ...
    resource_type: Mapped[str] = mapped_column(String(16))
    resource_id: Mapped[str] = mapped_column(String(36))
    project_id: Mapped[str | None] = mapped_column(String(36))
    user_id: Mapped[str | None] = mapped_column(String(36))
    status: Mapped[str] = mapped_column(String(16), default=TaskStatus.QUEUED)
    progress: Mapped[int] = mapped_column(Integer, default=0)
    step: Mapped[str | None] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # asked to stop (POST /tasks/{id}/actions/cancel): a cancellable handler sees it
    # at its next step or progress report, stops, and undoes what it did
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    worker: Mapped[str | None] = mapped_column(String(64))  # the controller running it
    # while running: until when the worker holds it; renewed while the worker lives, and
    # once it has passed another controller takes the task over
    lease_until: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class Controller(Base):
    """A ``nubis serve`` process sharing the database with others: it writes its
    heartbeat while it lives (the tasks it runs carry its id as their worker)."""

    __tablename__ = "controllers"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    address: Mapped[str] = mapped_column(String(255))  # where its API listens
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)


class Lease(Base):
    """Work that runs on one controller at a time (the HA monitor, the metrics
    collector...): held by ``holder`` until ``until``, renewed while it lives."""

    __tablename__ = "leases"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(64))
    until: Mapped[datetime]


class FirstRunStep(Base):
    """A one-time set-up step done (``defaults``: the first pool and network): it is
    not done again, even once what it made was removed."""

    __tablename__ = "first_run"
    step: Mapped[str] = mapped_column(String(32), primary_key=True)
    done_at: Mapped[datetime] = mapped_column(default=utcnow)
