"""PostgreSQL out of reach for a while under load (a proxy between the controller and
PostgreSQL turns every connection away): the API answers 503 with a clear message and
changes nothing; the tasks in flight pause; once the database is back, every task
ends once and every instance asked for runs, none twice."""

from __future__ import annotations

import os
import time

import libvirt
import pytest
from sqlalchemy import make_url

from tests.integration.proxy import CuttableProxy
from tests.integration.server import NubisServer, libvirt_leftovers
from tests.pg import private_database

pytestmark = pytest.mark.integration

PG_URL = os.environ.get("NUBIS_TEST_DATABASE_URL")
OUTAGE = 12.0  # seconds: longer than a task's lease (4.5 s here)
TINY = {"image": "nubis-tiny", "flavor": "m1.tiny"}


def domains_named(instance_ids: list[str]) -> list[str]:
    conn = libvirt.open("qemu:///system")
    try:
        names = [d.name() for d in conn.listAllDomains()]
    finally:
        conn.close()
    return sorted(n for n in names for i in instance_ids if n == f"nubis-{i}")


def test_the_control_plane_waits_out_a_database_outage(tmp_path):
    if not PG_URL:
        pytest.skip("NUBIS_TEST_DATABASE_URL not set")
    server = make_url(PG_URL)
    with private_database(PG_URL, "out") as url:
        proxy = CuttableProxy(tcp_upstream=(server.host or "127.0.0.1", server.port or 5432))
        proxied = make_url(url).set(host="127.0.0.1", port=proxy.port)
        srv = NubisServer(
            tmp_path / "data",
            NUBIS_DATABASE_URL=proxied.render_as_string(hide_password=False),
            NUBIS_TASK_TAKEOVER_SECONDS="6",
            NUBIS_RECONCILE_INTERVAL_SECONDS="600",
        )
        try:
            srv.start()
            asked = {}
            for i in range(3):  # a burst of creates, in flight when the database goes
                resp = srv.client.post("/instances", json={"name": f"outage-{i}", **TINY})
                assert resp.status_code == 202, resp.text
                asked[resp.json()["id"]] = resp.json()["task_id"]
            time.sleep(1)
            proxy.go_down()
            gone = time.monotonic()
            refused = 0
            while time.monotonic() - gone < OUTAGE:
                for method, path, body in (
                    ("GET", "/instances", None),
                    ("POST", "/instances", {"name": "during-outage", **TINY}),
                ):
                    resp = srv.client.request(method, path, json=body)
                    assert resp.status_code == 503, resp.text
                    error = resp.json()["error"]
                    assert error["code"] == "unavailable", error
                    assert "database cannot be reached" in error["message"]
                    assert resp.headers["Retry-After"] == "5"
                    refused += 1
                time.sleep(1)
            proxy.come_back()
            print(f"{refused} requests answered 503 during a {OUTAGE:.0f} s outage")

            for instance_id, task_id in asked.items():
                task = srv.wait_task(task_id)
                assert task["status"] == "succeeded", task
                assert srv.instance(instance_id)["status"] == "running"
                tasks = srv.client.get("/tasks", params={"resource_id": instance_id}).json()
                assert [t["kind"] for t in tasks["items"]] == ["instance.create"]
            names = [i["name"] for i in srv.client.get("/instances").json()["items"]]
            assert sorted(names) == ["outage-0", "outage-1", "outage-2"]  # none made meanwhile
            assert domains_named(list(asked)) == sorted(f"nubis-{i}" for i in asked)  # once each
            for instance_id in asked:
                resp = srv.client.delete(f"/instances/{instance_id}")
                assert srv.wait_task(resp.json()["task_id"])["status"] == "succeeded"
                assert libvirt_leftovers(instance_id) == []
        finally:
            srv.stop()
            proxy.close()
