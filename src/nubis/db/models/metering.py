"""Models of metering: usage per resource per hour, prices, and how far metering got."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import Numeric, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from nubis.db.models.base import Base, new_id, utcnow


class UsageRecord(Base):
    """How much of ``metric`` one resource used in the hour starting ``period_start``
    (instance hours by flavor, GiB-hours of volumes, snapshots and images)."""

    __tablename__ = "usage_records"
    __table_args__ = (UniqueConstraint("resource_id", "metric", "period_start"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(String(36), index=True)
    resource_type: Mapped[str] = mapped_column(String(16))
    resource_id: Mapped[str] = mapped_column(String(36))
    resource_name: Mapped[str] = mapped_column(String(64))
    metric: Mapped[str] = mapped_column(String(32))  # instance.hours, volume.gib_hours, ...
    dimension: Mapped[str] = mapped_column(String(64), default="")  # the flavor, for instances
    period_start: Mapped[datetime] = mapped_column(index=True)
    quantity: Mapped[float]


class Rate(Base):
    """The price of one unit of ``metric`` (of ``dimension``: a flavor; "" for any)."""

    __tablename__ = "rates"
    __table_args__ = (UniqueConstraint("metric", "dimension"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    metric: Mapped[str] = mapped_column(String(32))
    dimension: Mapped[str] = mapped_column(String(64), default="")
    price: Mapped[Decimal] = mapped_column(Numeric(14, 6))
    currency: Mapped[str] = mapped_column(String(3), default="EUR")
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class MeteringMark(Base):
    """The end of the last metering sweep: usage before it is recorded."""

    __tablename__ = "metering_marks"
    name: Mapped[str] = mapped_column(String(16), primary_key=True)
    done_until: Mapped[datetime]
