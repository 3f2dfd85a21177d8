"""Shapes of the monitoring API: metric series and events."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from nubis.api.schemas import In, Out


class SeriesOut(BaseModel):
    resource_id: str
    resolution: int = Field(description="0: raw samples; 300: 5-minute; 3600: hourly averages")
    step: float = Field(description="seconds between points")
    since: int = Field(description="epoch seconds")
    until: int
    units: dict[str, str]
    series: dict[str, list[Any]] = Field(
        description="'ts' (epoch seconds) and one list per metric, same length, oldest first"
    )


class EventOut(Out):
    id: str
    created_at: datetime
    project_id: str | None
    resource_type: str
    resource_id: str
    resource_name: str | None
    kind: str
    severity: str
    message: str


class AlarmIn(In):
    name: str
    resource_type: str = Field(description="instance or host")
    resource: str = Field(description="the instance or host, by id or name")
    metric: str = Field(description="a metric of the resource, or host_down for a host")
    aggregation: str = Field(default="avg", description="avg, min or max over the duration")
    comparator: str = Field(default="gt", description="gt, ge, lt or le")
    threshold: float = 0.0
    duration_seconds: int = Field(default=300, description="the window the value is taken over")
    hysteresis: float = Field(default=0.0, description="how far past the threshold it clears")
    webhook_url: str | None = Field(default=None, max_length=512)
    email: str | None = Field(default=None, max_length=255)


class AlarmOut(Out):
    id: str
    name: str
    project_id: str | None
    resource_type: str
    resource_id: str
    metric: str
    aggregation: str
    comparator: str
    threshold: float
    hysteresis: float
    duration_seconds: int
    webhook_url: str | None
    email: str | None
    enabled: bool
    state: str
    state_since: datetime
    last_value: float | None
    evaluated_at: datetime | None
    acknowledged_at: datetime | None
    silenced_until: datetime | None
    created_at: datetime


class AlarmCreated(AlarmOut):
    webhook_secret: str | None = Field(
        description="signs every webhook (X-Nubis-Signature: sha256=HMAC); shown only now"
    )


class AlarmActionIn(In):
    seconds: int | None = Field(default=None, description="for silence: how long")


class NotificationOut(Out):
    id: str
    channel: str
    target: str
    status: str
    attempts: int
    last_error: str | None
    created_at: datetime
    next_attempt_at: datetime
