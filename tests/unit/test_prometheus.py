"""GET /metrics: only with the scrape token; the platform's health and the latest
samples in Prometheus's text format."""

import time

from prometheus_client.parser import text_string_to_metric_families

from nubis.db.models import Host
from nubis.services.monitoring import metrics


def scrape(client, platform) -> dict[str, list]:
    token = platform.settings.scrape_token()
    resp = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain")
    return {f.name: f.samples for f in text_string_to_metric_families(resp.text)}


def test_metrics_need_the_scrape_token(client, platform):
    assert client.get("/metrics").status_code == 401
    wrong = client.get("/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert (platform.settings.data_dir / "metrics-token").stat().st_mode & 0o777 == 0o600


def test_health_and_samples_are_exported(client, platform):
    client.get("/api/v1/health")
    with platform.db.begin() as s:
        host_id = s.query(Host).one().id
        metrics.store(
            s,
            metrics.HOSTS,
            [{"host_id": host_id, "ts": int(time.time()), "cpu_pct": 42.5, "memory_used_mib": 900}],
        )
    families = scrape(client, platform)
    tasks = {s.labels["state"]: s.value for s in families["nubis_tasks"]}
    assert set(tasks) == {"queued", "running", "succeeded", "failed"}
    assert [(s.labels, s.value) for s in families["nubis_host_up"]] == [({"host": "fake"}, 1.0)]
    assert [(s.labels, s.value) for s in families["nubis_host_cpu_pct"]] == [
        ({"host": "fake"}, 42.5)
    ]
    counts = [
        s
        for s in families["nubis_api_request_duration_seconds"]
        if s.name.endswith("_count") and s.labels["route"] == "/health"
    ]
    assert counts and counts[0].labels["status"] == "200" and counts[0].value >= 1
