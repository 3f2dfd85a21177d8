"""Shapes of the monitoring API: metric series and events."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from nubis.api.schemas import Out


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
