"""Create+delete at concurrency 50 against fake hosts, with one controller and with
three (issue 27).

    .venv/bin/python bench/churn.py [--hosts 4] [--concurrency 50] [--seconds 30]
                                    [--url postgresql+psycopg://...]

Real ``nubis serve`` processes on a private PostgreSQL database (``--url``, default
NUBIS_TEST_DATABASE_URL). The hosts are fake: every one is the libvirt ``test`` driver
of the local libvirtd (``test+unix:///default?host=N``), so the controllers go through
the real driver code and the real remote protocol, and every controller sees the
domains and disks every other one made. The image's copy is put in the fake hosts'
disk pool beforehand (the test driver takes no upload), and instances have no seed
disc (``seed_format: none``: building one is an upload too).

The fakes share one test driver, so each of them shows every domain and reports every
domain's events: the controllers handle each event once per fake host, where a real
host reports only its own. More fake hosts make the figures worse for that reason
alone; hence few by default.

``--concurrency`` clients each create an instance through the API, wait for its task,
delete it, wait again, and start over, for ``--seconds``; first all against one
controller, then spread over three, then all asked of one of the three (as behind a
balancer that sends everything to one: the tasks still run on all three). Printed, for
each: create+delete pairs per second (target: >= 20 with one controller, more with
three) and the ratio, how many tasks each controller ran, failed tasks
(target 0), how long a task waited for a worker and ran, the controllers' CPU time and
the database's commits per pair, and the CPU the whole machine spent per pair (the
controllers, PostgreSQL, the libvirtd, the clients) with the rate its cores could reach at
that cost; then what is left on the fake hosts (target: nothing).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import libvirt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scheduler import populate  # noqa: E402
from sqlalchemy import select, text  # noqa: E402
from tests.integration.controllers import controller, join  # noqa: E402
from tests.integration.server import NubisServer, libvirt_leftovers  # noqa: E402
from tests.pg import private_database  # noqa: E402

from nubis.db.models import Task  # noqa: E402
from nubis.db.session import Database  # noqa: E402
from nubis.drivers.libvirt.compute import CONSOLE_POOL, DISK_POOL  # noqa: E402

FAKE = "test+unix:///default"
DONE = ("succeeded", "failed", "cancelled")


def fake_host(i: int) -> str:
    return f"{FAKE}?host={i}"


@dataclass
class Waits:
    """One thread reads the status of every task clients wait for (instead of each
    client polling the API, which would load the controllers more than the work)."""

    db: Database
    waiting: dict[str, threading.Event] = field(default_factory=dict)
    ended: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.wait(0.05):
            with self.lock:
                ids = list(self.waiting)
            if not ids:
                continue
            with self.db.read() as s:
                rows = s.execute(
                    select(Task.id, Task.status, Task.error).where(Task.id.in_(ids))
                ).all()
            with self.lock:
                for task_id, status, error in rows:
                    if status in DONE:
                        self.ended[task_id] = f"{status} ({error})" if error else status
                        self.waiting.pop(task_id).set()

    def wait(self, task_id: str) -> str:
        event = threading.Event()
        with self.lock:
            self.waiting[task_id] = event
        event.wait()
        with self.lock:
            return self.ended.pop(task_id)


@dataclass
class Tally:
    pairs: int = 0
    failed: list[str] = field(default_factory=list)
    made: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # of the controllers' processes
    machine_cpu_seconds: float = 0.0  # of every process: PostgreSQL, libvirtd, the clients
    commits: int = 0  # PostgreSQL transactions, everything the controllers did meanwhile


def client_loop(api: httpx.Client, waits: Waits, until: float, tally: Tally, n: int) -> None:
    """One client creating and deleting until ``until``; a request the connection
    dropped counts as failed (and this client stops)."""
    try:
        create_and_delete(api, waits, until, tally, n)
    except httpx.TransportError as exc:
        with tally.lock:
            tally.failed.append(f"client {n}: {exc!r}")


def create_and_delete(api: httpx.Client, waits: Waits, until: float, tally: Tally, n: int) -> None:
    round_ = 0
    while time.monotonic() < until:
        round_ += 1
        name = f"churn-{n}-{round_}"
        body = {"name": name, "image": "churn", "flavor": "m1.tiny", "seed_format": "none"}
        resp = api.post("/instances", json=body)
        if resp.status_code != 202:
            with tally.lock:
                tally.failed.append(f"create: {resp.status_code} {resp.text[:200]}")
            return
        body = resp.json()
        with tally.lock:
            tally.made.append(body["id"])
        status = waits.wait(body["task_id"])
        resp = api.delete(f"/instances/{body['id']}")
        if resp.status_code != 202:
            with tally.lock:
                tally.failed.append(f"delete after {status}: {resp.status_code} {resp.text[:200]}")
            return
        ended = waits.wait(resp.json()["task_id"])
        with tally.lock:
            if status != "succeeded" or ended != "succeeded":
                tally.failed.append(f"create {status}, delete {ended}")
            else:
                tally.pairs += 1


def cpu_seconds(servers: list[NubisServer]) -> float:
    """User and system CPU time the controllers' processes have used."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for server in servers:
        fields = Path(f"/proc/{server.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def machine_cpu_seconds() -> float:
    """CPU time every process on this machine has used (busy: not idle, not waiting
    for a disk)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    busy = sum(fields[:8]) - fields[3] - fields[4]  # user..steal, less idle and iowait
    return busy / os.sysconf("SC_CLK_TCK")


def commits(db: Database) -> int:
    with db.read() as s:
        query = "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        return int(s.scalar(text(query)) or 0)


def churn(
    servers: list[NubisServer],
    waits: Waits,
    concurrency: int,
    seconds: float,
    asked: list[NubisServer] | None = None,
) -> Tally:
    """``concurrency`` clients creating and deleting, their requests spread over
    ``asked`` (default: every one of ``servers``)."""
    tally = Tally()
    clients = [s.client for s in asked or servers]
    until = time.monotonic() + seconds
    threads = [
        threading.Thread(
            target=client_loop,
            args=(clients[n % len(clients)], waits, until, tally, n),
        )
        for n in range(concurrency)
    ]
    cpu, committed, start = cpu_seconds(servers), commits(waits.db), time.monotonic()
    machine = machine_cpu_seconds()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    tally.seconds = time.monotonic() - start
    tally.cpu_seconds = cpu_seconds(servers) - cpu
    tally.machine_cpu_seconds = machine_cpu_seconds() - machine
    time.sleep(0.5)  # the statistics collector's delay
    tally.commits = commits(waits.db) - committed
    return tally


@contextmanager
def fake_pools(image_id: str) -> Iterator[None]:
    """The fake hosts' pools (disks, console logs), the image's copy (and its ready
    mark) in the disk pool, as adding a host and a first create would leave them."""
    conn = libvirt.open(FAKE)
    pools = []
    for name in (DISK_POOL, CONSOLE_POOL):
        pool = conn.storagePoolDefineXML(
            f"<pool type='dir'><name>{name}</name>"
            f"<target><path>/nubis-fake/{name}</path></target></pool>"
        )
        pool.create()
        pools.append(pool)
    for name in (f"image-{image_id}", f"image-{image_id}.ready"):
        pools[0].createXML(
            f"<volume><name>{name}</name><capacity>67108864</capacity>"
            "<target><format type='qcow2'/></target></volume>"
        )
    try:
        yield
    finally:
        for pool in pools:
            for name in pool.listVolumes():
                pool.storageVolLookupByName(name).delete()
            pool.destroy()
            pool.undefine()
        conn.close()


def upload_image(server: NubisServer, tmp: Path) -> str:
    path = tmp / "churn.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "64M"], check=True)
    resp = server.client.post(
        "/images",
        params={"name": "churn", "disk_format": "qcow2"},
        content=path.read_bytes(),
        headers={"Content-Type": "application/octet-stream"},
    )
    resp.raise_for_status()
    return str(resp.json()["id"])


def unlimited(server: NubisServer) -> None:
    """No quota stops the clients: the admin's project may use as much as it likes."""
    limits = server.client.get("/quotas").json()["quotas"]
    resp = server.client.put("/projects/admin/quotas", json=dict.fromkeys(limits, -1))
    resp.raise_for_status()


def shared_out(servers: list[NubisServer], hosts: int, timeout: float = 60) -> None:
    """Wait until every controller holds its fair share of the hosts. A host taken over
    is reconciled, and every fake host shows every domain (one test driver): the
    domains of the other hosts would look stale to it. Real hosts do not."""
    fair = hosts // len(servers)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        views = servers[0].client.get("/controllers").json()
        if len(views) == len(servers) and all(v["hosts"] >= fair for v in views):
            return
        time.sleep(0.5)
    raise SystemExit(f"the hosts were not shared out in {timeout:.0f} s: {views}")


def task_times(db: Database, made: list[str]) -> tuple[float, float, list[int]]:
    """Median seconds a task of these instances waited for a worker, and ran; how
    many each controller ran (most first)."""
    waited, ran, by = [], [], Counter[str]()
    with db.read() as s:
        for chunk in range(0, len(made), 500):
            for t in s.scalars(select(Task).where(Task.resource_id.in_(made[chunk : chunk + 500]))):
                if t.started_at and t.finished_at:
                    waited.append((t.started_at - t.created_at).total_seconds())
                    ran.append((t.finished_at - t.started_at).total_seconds())
                    by[t.worker or "?"] += 1
    counts = sorted(by.values(), reverse=True)
    return statistics.median(waited or [0.0]), statistics.median(ran or [0.0]), counts


def report(label: str, tally: Tally, db: Database) -> float:
    rate = tally.pairs / tally.seconds
    waited, ran, by = task_times(db, tally.made)
    pairs = max(1, tally.pairs)
    print(f"  {label:<24} {tally.pairs:5d} pairs in {tally.seconds:5.1f} s = {rate:5.1f}/s, "
          f"{len(tally.failed)} failed; a task waits {waited * 1000:4.0f} ms and runs "
          f"{ran * 1000:4.0f} ms (medians); per pair: {tally.cpu_seconds / pairs * 1000:.0f} ms "
          f"of controller CPU, {tally.commits / pairs:.0f} database commits; tasks run by "
          f"each controller: {' / '.join(map(str, by))}")  # fmt: skip
    cores = os.cpu_count() or 1
    machine = tally.machine_cpu_seconds / pairs
    print(f"  {'':<24} the whole machine: {machine * 1000:.0f} ms of CPU per pair, its "
          f"{cores} cores {tally.machine_cpu_seconds / (tally.seconds * cores):.0%} busy: at "
          f"that cost these cores make at most {cores / machine:.1f} pairs/s")  # fmt: skip
    for line in tally.failed[:5]:
        print(f"    {line}")
    return rate


def run(url: str, hosts: int, concurrency: int, seconds: float) -> None:
    key = uuid.uuid4().hex * 2
    with tempfile.TemporaryDirectory(prefix="nubis-churn-") as tmp_dir:
        tmp = Path(tmp_dir)
        env = {"NUBIS_REGISTER_LOCAL_HOST": "0", "NUBIS_BUILD_TINY_IMAGE": "0"}
        first = controller(tmp / "c1" / "data", url, key).start(**env)
        servers = [first]
        db = Database(url)
        waits = Waits(db)
        watcher = threading.Thread(target=waits.run, daemon=True)
        watcher.start()
        try:
            populate(db, hosts, 0, fake_host, "churn-")
            unlimited(first)
            image_id = upload_image(first, tmp)
            with fake_pools(image_id):
                one = churn(servers, waits, concurrency, seconds)
                for n in (2, 3):
                    servers.append(join(first, controller(tmp / f"c{n}" / "data", url, key)))
                shared_out(servers, hosts)
                three = churn(servers, waits, concurrency, seconds)
                # a balancer that sends every request to one: the others' idle workers
                # are woken by the queueing (NOTIFY), not by their next look
                funnel = churn(servers, waits, concurrency, seconds, asked=servers[:1])
                made = one.made + three.made + funnel.made
                left = [x for i in made for x in libvirt_leftovers(i, FAKE)]
                print(f"create+delete at concurrency {concurrency}, {hosts} fake hosts, "
                      f"{seconds:.0f} s each")  # fmt: skip
                rate1 = report("one controller", one, db)
                rate3 = report("three controllers", three, db)
                report("three, all asked of one", funnel, db)
                print(f"  ratio three/one: x{rate3 / rate1:.2f} (targets: one >= 20/s; "
                      f"three more than one) on {os.cpu_count()} CPUs")  # fmt: skip
                print(f"  left on the fake hosts: {len(left)} objects of {len(made)} instances")
                for thing in left[:5]:
                    print(f"    {thing}")
        finally:
            waits.stop.set()
            for s in servers:
                s.terminate()
            db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--url", default=os.environ.get("NUBIS_TEST_DATABASE_URL"))
    args = parser.parse_args()
    if not args.url:
        raise SystemExit("a PostgreSQL URL is needed: --url or NUBIS_TEST_DATABASE_URL")
    with private_database(args.url, "churn") as url:
        run(url, args.hosts, args.concurrency, args.seconds)


if __name__ == "__main__":
    main()
