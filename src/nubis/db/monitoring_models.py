"""Models of monitoring: metric samples (raw and rolled up), events, alarm rules and
their notifications. Timestamps of samples are integer epoch seconds, so that
rolling up into buckets is the same integer arithmetic on every backend."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Float, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from nubis.db.models import Base, new_id, utcnow

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
