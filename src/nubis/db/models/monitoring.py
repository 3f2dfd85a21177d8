"""Models of monitoring: metric samples (raw and rolled up), events, alarm rules and
their notifications. Timestamps of samples are integer epoch seconds, so that
rolling up into buckets is the same integer arithmetic on every backend."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Float, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from nubis.db.models.base import Base, new_id, utcnow

RAW = 0  # resolution of samples as collected (every collection interval)


class InstanceSample(Base):
    """One instance's rates and levels over one interval (``resolution`` 0) or the
    average over a bucket of ``resolution`` seconds starting at ``ts``."""

    __tablename__ = "instance_samples"
    instance_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    resolution: Mapped[int] = mapped_column(Integer, primary_key=True)
    ts: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    cpu_pct: Mapped[float | None] = mapped_column(Float)
    memory_mib: Mapped[float | None] = mapped_column(Float)
    disk_read_bps: Mapped[float | None] = mapped_column(Float)
    disk_write_bps: Mapped[float | None] = mapped_column(Float)
    disk_read_iops: Mapped[float | None] = mapped_column(Float)
    disk_write_iops: Mapped[float | None] = mapped_column(Float)
    net_rx_bps: Mapped[float | None] = mapped_column(Float)
    net_tx_bps: Mapped[float | None] = mapped_column(Float)
    net_rx_pps: Mapped[float | None] = mapped_column(Float)
    net_tx_pps: Mapped[float | None] = mapped_column(Float)


Index("ix_instance_samples_age", InstanceSample.resolution, InstanceSample.ts)


class HostSample(Base):
    __tablename__ = "host_samples"
    host_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    resolution: Mapped[int] = mapped_column(Integer, primary_key=True)
    ts: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    cpu_pct: Mapped[float | None] = mapped_column(Float)
    memory_used_mib: Mapped[float | None] = mapped_column(Float)
    memory_total_mib: Mapped[float | None] = mapped_column(Float)
    memory_allocated_pct: Mapped[float | None] = mapped_column(Float)
    storage_used_gib: Mapped[float | None] = mapped_column(Float)
    storage_total_gib: Mapped[float | None] = mapped_column(Float)


Index("ix_host_samples_age", HostSample.resolution, HostSample.ts)


class SampleRollup(Base):
    """How far samples of ``resolution`` have been rolled up (exclusive end, epoch s)."""

    __tablename__ = "sample_rollups"
    sample_table: Mapped[str] = mapped_column(String(32), primary_key=True)
    resolution: Mapped[int] = mapped_column(Integer, primary_key=True)
    done_until: Mapped[int] = mapped_column(BigInteger)


class Event(Base):
    """Something that happened: an instance changed state, a host went down, a task
    failed, a threshold was crossed. ``project_id`` None: infrastructure, seen by
    the system administrator only."""

    __tablename__ = "events"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    project_id: Mapped[str | None] = mapped_column(String(36), index=True)
    resource_type: Mapped[str] = mapped_column(String(16))
    resource_id: Mapped[str] = mapped_column(String(36), index=True)
    resource_name: Mapped[str | None] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))  # instance.state, host.down, task.failed...
    severity: Mapped[str] = mapped_column(String(8))  # info | warning | error
    message: Mapped[str] = mapped_column(Text)


class AlarmRule(Base):
    """metric + aggregation + comparator + threshold over ``duration_seconds`` of one
    resource; ``state`` is ok, alarm or insufficient_data. Changes into or out of
    ``alarm`` are notified (webhook, e-mail) unless the rule is silenced."""

    __tablename__ = "alarm_rules"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[str | None] = mapped_column(String(36), index=True)
    resource_type: Mapped[str] = mapped_column(String(16))  # instance | host
    resource_id: Mapped[str] = mapped_column(String(36), index=True)
    metric: Mapped[str] = mapped_column(String(32))  # a sample column, or host_down
    aggregation: Mapped[str] = mapped_column(String(8))  # avg | min | max
    comparator: Mapped[str] = mapped_column(String(2))  # gt | ge | lt | le
    threshold: Mapped[float] = mapped_column(Float)
    hysteresis: Mapped[float] = mapped_column(Float, default=0.0)
    duration_seconds: Mapped[int] = mapped_column(Integer)
    webhook_url: Mapped[str | None] = mapped_column(String(512))
    webhook_secret: Mapped[str | None] = mapped_column(Text)  # encrypted
    email: Mapped[str | None] = mapped_column(String(255))
    enabled: Mapped[bool] = mapped_column(default=True)
    state: Mapped[str] = mapped_column(String(20), default="insufficient_data")
    state_since: Mapped[datetime] = mapped_column(default=utcnow)
    last_value: Mapped[float | None] = mapped_column(Float)
    evaluated_at: Mapped[datetime | None]
    acknowledged_at: Mapped[datetime | None]
    silenced_until: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Notification(Base):
    """One message about one transition of a rule, delivered by the notifier with
    retries: written in the transaction of the transition, so each is sent once
    (receivers de-duplicate by ``id``, sent as X-Nubis-Delivery, across retries)."""

    __tablename__ = "alarm_notifications"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    rule_id: Mapped[str] = mapped_column(String(36), index=True)
    channel: Mapped[str] = mapped_column(String(8))  # webhook | email
    target: Mapped[str] = mapped_column(String(512))
    payload: Mapped[str] = mapped_column(Text)  # the JSON document sent
    status: Mapped[str] = mapped_column(String(8), default="pending", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookAllowance(Base):
    """A network alarm webhooks may go to although it is not public (loopback, a
    private range, a host's address): the system administrator's allow-list."""

    __tablename__ = "webhook_allowlist"
    cidr: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
