"""Auth benchmark: what identity costs a request, through the whole ASGI stack.

    .venv/bin/python bench/auth.py [--requests 300] [--database-url URL]

A control plane (no task workers, libvirt's test:/// driver as its host, a SQLite
file unless --database-url names PostgreSQL) served in-process. Times, per request
(median and p95 in ms): a read with a bearer token, the same read signed with an
API key (HMAC check + replay record), a change with a token (policy + audit record
committed before the answer), and a quota-checked create refused by its quota
(lock the project row, count usage). Login is timed apart: Argon2id is slow on
purpose.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import statistics
import time
from collections.abc import Callable

from control_plane import control_plane
from fastapi.testclient import TestClient

from nubis.api.app import create_app
from nubis.platform import Platform
from nubis.services.identity import signing

API = "/api/v1"


def timed(n: int, call: Callable[[int], int], expect: int) -> list[float]:
    out = []
    for i in range(n):
        start = time.perf_counter()
        status = call(i)
        out.append((time.perf_counter() - start) * 1000)
        if status != expect:
            raise SystemExit(f"unexpected status {status} (wanted {expect})")
    return out


def report(name: str, samples: list[float]) -> None:
    p95 = statistics.quantiles(samples, n=20)[18]
    print(f"{name:<42} median {statistics.median(samples):7.2f} ms   p95 {p95:7.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    with (
        control_plane("auth", args.database_url) as platform,
        TestClient(create_app(platform, manage_lifecycle=False)) as client,
    ):
        run(client, platform, args.requests)


def run(client: TestClient, platform: Platform, n: int) -> None:
    password = (platform.settings.data_dir / "admin-password").read_text().strip()
    logins = timed(
        10,
        lambda _i: (
            client.post(
                f"{API}/auth/tokens", json={"username": "admin", "password": password}
            ).status_code
        ),
        201,
    )
    token = client.post(f"{API}/auth/tokens", json={"username": "admin", "password": password})
    bearer = {"Authorization": f"Bearer {token.json()['token']}"}
    key = client.post(f"{API}/api-keys", json={"name": "bench"}, headers=bearer).json()

    def signed_unique(i: int) -> int:
        stamp = str(int(time.time()))
        query = [("n", str(i))]
        canonical = signing.canonical_request(
            "GET", f"{API}/tasks", query, hashlib.sha256(b"").hexdigest(), stamp
        )
        sig = hmac.new(key["secret"].encode(), canonical.encode(), hashlib.sha256).hexdigest()
        headers = {"X-Nubis-Key": key["id"], "X-Nubis-Timestamp": stamp, "X-Nubis-Signature": sig}
        return client.get(f"{API}/tasks", params={"n": str(i)}, headers=headers).status_code

    client.put(f"{API}/projects/admin/quotas", json={"networks": 0}, headers=bearer)
    reads = timed(n, lambda _i: client.get(f"{API}/tasks", headers=bearer).status_code, 200)
    signed = timed(n, signed_unique, 200)
    changes = timed(
        n,
        lambda i: (
            client.post(
                f"{API}/key-pairs", json={"name": f"bad name {i}!"}, headers=bearer
            ).status_code
        ),
        400,
    )
    quota = timed(
        n,
        lambda i: (
            client.post(
                f"{API}/networks",
                json={"name": f"n{i}", "mode": "isolated", "subnets": [{"cidr": "10.9.0.0/24"}]},
                headers=bearer,
            ).status_code
        ),
        409,
    )
    print(f"database: {platform.settings.db_url.split(':')[0]}, {n} requests each")
    report("login (Argon2id verify + token)", logins)
    report("GET /tasks, bearer token", reads)
    report("GET /tasks, signed request", signed)
    report("POST refused (400) + audit record", changes)
    report("POST /networks refused by quota + audit", quota)


if __name__ == "__main__":
    main()
