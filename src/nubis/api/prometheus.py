"""``GET /metrics`` for Prometheus: the platform's own health (tasks by state, API
latency, hosts' connection state, alarms by state) and the latest host and
instance samples as gauges. Read with the scrape token (``Authorization: Bearer``,
the file ``<data_dir>/metrics-token`` or the ``metrics_token`` setting)."""

from __future__ import annotations

import time
from collections.abc import Iterator

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.types import ASGIApp, Receive, Scope, Send

from nubis.db.models import Host, Instance, Project, Task
from nubis.db.models.monitoring import AlarmRule
from nubis.platform import Platform
from nubis.services.core.errors import Unauthorized
from nubis.services.identity import signing
from nubis.services.monitoring import metrics

router = APIRouter(include_in_schema=False)
TASK_STATES = ("queued", "running", "succeeded", "failed")
ALARM_STATES = ("ok", "alarm", "insufficient_data")


class PlatformCollector(Collector):
    """Read from the database at every scrape (no second copy of the numbers)."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self.platform.db.begin() as s:
            tasks = dict(s.execute(select(Task.status, func.count()).group_by(Task.status)).all())
            alarms = dict(
                s.execute(select(AlarmRule.state, func.count()).group_by(AlarmRule.state)).all()
            )
            hosts = {h.id: h for h in s.scalars(select(Host))}
            named = s.execute(
                select(Instance.id, Instance.name, Project.name).join(
                    Project, Project.id == Instance.project_id
                )
            ).all()
            since = int(time.time() - 3 * self.platform.retention.interval)
            host_latest = metrics.latest(s, metrics.HOSTS, since)
            instance_latest = metrics.latest(s, metrics.INSTANCES, since)
        g = GaugeMetricFamily("nubis_tasks", "Tasks by state", labels=["state"])
        for state in TASK_STATES:
            g.add_metric([state], tasks.get(state, 0))
        yield g
        g = GaugeMetricFamily("nubis_alarms", "Alarm rules by state", labels=["state"])
        for state in ALARM_STATES:
            g.add_metric([state], alarms.get(state, 0))
        yield g
        g = GaugeMetricFamily("nubis_host_up", "1 when Nubis reaches the host", labels=["host"])
        for host in hosts.values():
            g.add_metric([host.name], 1.0 if host.state == "up" else 0.0)
        yield g
        for name, unit in metrics.HOST_METRICS.items():
            g = GaugeMetricFamily(f"nubis_host_{name}", f"{name} ({unit})", labels=["host"])
            for host_id, values in host_latest.items():
                if values.get(name) is not None and host_id in hosts:
                    g.add_metric([hosts[host_id].name], values[name])
            yield g
        labels = {iid: (iid, name, project) for iid, name, project in named}
        for name, unit in metrics.INSTANCE_METRICS.items():
            g = GaugeMetricFamily(
                f"nubis_instance_{name}",
                f"{name} ({unit})",
                labels=["instance_id", "instance", "project"],
            )
            for iid, values in instance_latest.items():
                if values.get(name) is not None and iid in labels:
                    g.add_metric(list(labels[iid]), values[name])
            yield g


class Telemetry:
    """The registry behind ``/metrics`` and the API latency histogram in it."""

    def __init__(self, platform: Platform) -> None:
        self.expected_auth = f"Bearer {platform.settings.scrape_token()}"
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "nubis_api_request_duration_seconds",
            "Time to answer an API request",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.registry.register(PlatformCollector(platform))


class RequestTimer:
    """ASGI middleware: every HTTP request's duration, labelled by its route template."""

    def __init__(self, app: ASGIApp, telemetry: Telemetry) -> None:
        self.app = app
        self.telemetry = telemetry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def snd(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, snd)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.telemetry.latency.labels(scope["method"], route, str(status["code"])).observe(
                time.perf_counter() - started
            )


@router.get("/metrics")
def prometheus_metrics(request: Request) -> Response:
    telemetry: Telemetry = request.app.state.telemetry
    presented = request.headers.get("authorization", "")
    if not signing.equal(presented, telemetry.expected_auth):
        raise Unauthorized("GET /metrics needs the scrape token: Authorization: Bearer <token>")
    data = generate_latest(telemetry.registry)
    return Response(data, media_type=CONTENT_TYPE_LATEST)
