"""The chaos suite: break a devcluster managed by Nubis and measure how HA copes.

Three HA instances and one plain instance run on a three-host devcluster; each
guest keeps a counter on its own disk (written and synced every second, printed
on the serial console once durable, read back at boot). Then, one at a time:

- ``libvirtd-crash``: libvirtd dies on a host, its VMs run on: nothing may restart
  elsewhere; libvirtd comes back and takes its VMs back (same QEMU processes).
- ``network-partition``: the host's libvirt port is blocked: the same, until the
  port is opened again.
- ``qemu-crash``: one HA VM's QEMU process is killed: it restarts in place.
- ``host-crash``: a whole host dies: its HA VMs run again elsewhere, highest
  priority first; the plain one does not; then the host is booted again.

Throughout, every QEMU process of the instances is sampled five times a second:
no instance may ever run twice. Each scenario reports the time to detect, fence
and restart, and whether the guests' counters survived.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from nubis.devcluster.hosts import (
    DevCluster,
    DevHost,
    agent_token_file,
    block_port,
    kill_libvirtd,
    qemu_processes,
    restart_libvirtd,
    unblock_port,
)

CLUSTER = "devcluster"
# a counter on the root disk, 512 MiB in (far past the boot file system): read at
# boot, then incremented, written with fsync and printed, once a second
COUNTER_SCRIPT = """#!/bin/sh
n=$(dd if=/dev/vda bs=512 skip=1048576 count=1 2>/dev/null | tr -dc 0-9)
n=${n:-0}
echo "NUBIS-COUNTER-RESUMED $n"
while true; do
  n=$((n+1))
  echo $n | dd of=/dev/vda bs=512 seek=1048576 count=1 conv=sync,fsync 2>/dev/null
  echo "NUBIS-COUNTER $n"
  sleep 1
done
"""


class ChaosError(AssertionError):
    pass


@dataclass
class Scenario:
    name: str
    host: str
    detect_s: float | None = None  # until Nubis saw the failure
    fence_s: float | None = None  # until the host was fenced
    restart_s: float | None = None  # until the last HA instance ran again
    restarted: list[str] = field(default_factory=list)  # instance: where it runs now
    restarts_expected: bool = False
    recovered_s: float | None = None  # until the host was up again after the repair
    counters: dict[str, tuple[int, int]] = field(default_factory=dict)  # seen, resumed
    notes: list[str] = field(default_factory=list)


def register_hosts(http: httpx.Client, cluster: DevCluster, name: str = CLUSTER) -> None:
    """The devcluster's hosts in a Nubis cluster that trusts their shared disks, reads
    their lockspace, fences them with the devcluster's kill and reaches their network
    agents."""
    clusters = {c["name"] for c in _ok(http.get("/clusters", params={"limit": 1000}))["items"]}
    lockspace = cluster.lockspace
    settings = {
        "trust_shared_storage": lockspace is not None,
        "ha_lockspace": "" if lockspace is None else str(lockspace),
    }
    if name in clusters:
        _ok(http.patch(f"/clusters/{name}", json=settings))
    else:
        _ok(http.post("/clusters", json={"name": name, **settings}))
    known = {h["uri"] for h in _ok(http.get("/hosts", params={"limit": 1000}))["items"]}
    for host in cluster.hosts():
        if host.uri not in known:
            _ok(http.post("/hosts", json={"name": host.name, "uri": host.uri, "cluster": name}))
        fencing = {"method": "devcluster", "host": host.name, "base": str(cluster.base)}
        _ok(http.put(f"/hosts/{host.name}/fencing", json=fencing))
        agent = {"url": host.agent_url, "token": agent_token_file(cluster.base).read_text()}
        _ok(http.put(f"/hosts/{host.name}/agent", json=agent))


def _ok(resp: httpx.Response) -> Any:
    if resp.status_code >= 400:
        raise ChaosError(f"{resp.request.method} {resp.request.url.path}: {resp.text}")
    return resp.json() if resp.content else None


class ProcessWatch:
    """Samples the QEMU processes of each instance; ``most`` is the highest count seen."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.domains: dict[str, str] = {}  # instance id -> domain name
        self.most: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-watch", daemon=True)

    def __enter__(self) -> ProcessWatch:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for iid, domain in list(self.domains.items()):
                count = len(qemu_processes(domain))
                self.most[iid] = max(self.most.get(iid, 0), count)


class Chaos:
    def __init__(
        self, http: httpx.Client, cluster: DevCluster, down_after: float, timeout: float = 90
    ) -> None:
        self.http = http
        self.cluster = cluster
        self.down_after = down_after
        self.timeout = timeout
        self.watch = ProcessWatch()
        self.instances: dict[str, dict[str, Any]] = {}  # name -> instance

    # -- helpers ----------------------------------------------------------------------
    def host(self, name: str) -> dict[str, Any]:
        return _ok(self.http.get(f"/hosts/{name}"))

    def instance(self, name: str) -> dict[str, Any]:
        return _ok(self.http.get(f"/instances/{self.instances[name]['id']}"))

    def host_name(self, host_id: str) -> str:
        return _ok(self.http.get(f"/hosts/{host_id}"))["name"]

    def console(self, name: str) -> str:
        resp = self.http.get(f"/instances/{self.instances[name]['id']}/console-log")
        return resp.text if resp.status_code == 200 else ""

    def counter(self, name: str, marker: str = "NUBIS-COUNTER") -> int | None:
        values = re.findall(rf"{marker} (\d+)", self.console(name))
        return int(values[-1]) if values else None

    def until(self, what: str, check: Any, timeout: float | None = None) -> float:
        """Poll ``check`` until true; the seconds it took."""
        start = time.monotonic()
        deadline = start + (timeout or self.timeout)
        while time.monotonic() < deadline:
            if check():
                return time.monotonic() - start
            time.sleep(0.2)
        raise ChaosError(f"timed out waiting for {what}")

    def qemu_pids(self, name: str) -> list[int]:
        return qemu_processes(f"nubis-{self.instances[name]['id']}")

    # -- the run ------------------------------------------------------------------------
    def setup(self) -> None:
        layout = [
            ("chaos-ha-1", "dev-1", True, 100),
            ("chaos-ha-2", "dev-1", True, 50),
            ("chaos-plain", "dev-1", False, 0),
            ("chaos-ha-3", "dev-2", True, 10),
        ]
        tasks = []
        for name, host, ha, priority in layout:
            body = {
                "name": name,
                "image": "nubis-tiny",
                "flavor": "m1.tiny",
                "host": host,
                "cluster": CLUSTER,
                "ha": ha,
                "ha_priority": priority,
                "user_data": COUNTER_SCRIPT,
            }
            created = _ok(self.http.post("/instances", json=body))
            self.instances[name] = created
            self.watch.domains[created["id"]] = f"nubis-{created['id']}"
            tasks.append(created["task_id"])
        for task_id in tasks:
            self.until(f"task {task_id}", lambda t=task_id: self._task_done(t), 180)
        for name in self.instances:
            self.until(f"{name}'s counter", lambda n=name: (self.counter(n) or 0) >= 2, 180)

    def _task_done(self, task_id: str) -> bool:
        task = _ok(self.http.get(f"/tasks/{task_id}"))
        if task["status"] == "failed":
            raise ChaosError(f"task {task['kind']} failed: {task['error']}")
        return bool(task["status"] == "succeeded")

    def run(self) -> list[Scenario]:
        with self.watch:
            self.setup()
            results = [
                self.isolated("libvirtd-crash", "dev-2", "chaos-ha-3"),
                self.isolated("network-partition", "dev-2", "chaos-ha-3"),
                self.qemu_crash("chaos-ha-3"),
                self.host_crash("dev-1", ["chaos-ha-1", "chaos-ha-2"], "chaos-plain"),
            ]
            self.teardown()
        return results

    def isolated(self, scenario: str, host_name: str, vm: str) -> Scenario:
        """libvirt unreachable but the VMs alive: detected, never failed over."""
        result = Scenario(scenario, host_name)
        host = self.cluster.host(host_name)
        pids = self.qemu_pids(vm)
        start = time.monotonic()
        if scenario == "libvirtd-crash":
            kill_libvirtd(host)
        else:
            block_port(host)
        try:
            result.detect_s = self.until(
                f"{host_name} unreachable", lambda: self.host(host_name)["state"] != "up"
            )
            # well past the point where a dead host would have failed over
            hold_until = time.monotonic() + self.down_after + 3
            while time.monotonic() < hold_until:
                state = self.host(host_name)["state"]
                where = self.host_name(self.instance(vm)["host_id"])
                if state == "down" or where != host_name or self.qemu_pids(vm) != pids:
                    raise ChaosError(
                        f"{scenario}: {vm} was failed over although it kept running "
                        f"(host {state}, instance on {where})"
                    )
                time.sleep(0.5)
            result.notes.append(
                f"{host_name} stayed {self.host(host_name)['state']} for "
                f"{time.monotonic() - start:.0f} s; {vm} kept QEMU pid {pids}"
            )
        finally:
            repaired = time.monotonic()
            if scenario == "libvirtd-crash":
                restart_libvirtd(host)
            else:
                unblock_port(host)
        self.until(f"{host_name} up again", lambda: self.host(host_name)["state"] == "up")
        result.recovered_s = time.monotonic() - repaired
        if self.qemu_pids(vm) != pids:
            raise ChaosError(f"{scenario}: {vm} was restarted ({pids} -> {self.qemu_pids(vm)})")
        return result

    def qemu_crash(self, vm: str) -> Scenario:
        inst = self.instance(vm)
        host_name = self.host_name(inst["host_id"])
        result = Scenario("qemu-crash", host_name, restarts_expected=True)
        (pid,) = self.qemu_pids(vm)
        seen = self.counter(vm) or 0
        log = self.console(vm)
        os.kill(pid, signal.SIGKILL)
        result.detect_s = result.restart_s = self.until(
            f"{vm} restarted in place",
            lambda: (
                len(self.qemu_pids(vm)) == 1
                and self.qemu_pids(vm) != [pid]
                and self.instance(vm)["status"] == "running"
            ),
        )
        where = self.host_name(self.instance(vm)["host_id"])
        result.restarted.append(f"{vm}: {where}")
        if where != host_name:
            raise ChaosError(f"qemu-crash: {vm} moved to {where} instead of restarting in place")
        resumed = self._resumed(vm, log)
        result.counters[vm] = (seen, resumed)
        return result

    def host_crash(self, host_name: str, ha: list[str], plain: str) -> Scenario:
        result = Scenario("host-crash", host_name, restarts_expected=True)
        host = self.cluster.host(host_name)
        seen = {vm: self.counter(vm) or 0 for vm in ha}
        logs = {vm: self.console(vm) for vm in ha}
        start = time.monotonic()
        host.kill()
        self.until(f"{host_name} unreachable", lambda: self.host(host_name)["state"] != "up")
        result.detect_s = time.monotonic() - start
        self.until(f"{host_name} fenced, down", lambda: self.host(host_name)["state"] == "down")
        result.fence_s = time.monotonic() - start
        if not self.host(host_name)["fenced_at"]:
            raise ChaosError(f"host-crash: {host_name} is down but was never fenced")
        moved: dict[str, float] = {}

        def all_running() -> bool:
            for vm in ha:
                inst = self.instance(vm)
                if (
                    vm not in moved
                    and inst["status"] == "running"
                    and inst["task_state"] is None  # started there, not just placed
                    and (self.host_name(inst["host_id"]) != host_name)
                ):
                    moved[vm] = time.monotonic() - start
            return len(moved) == len(ha)

        self.until("the HA instances running elsewhere", all_running)
        result.restart_s = max(moved.values())
        for vm in ha:
            result.restarted.append(f"{vm}: {self.host_name(self.instance(vm)['host_id'])}")
        ids = {self.instances[vm]["id"]: vm for vm in ha}
        order: list[str] = []

        def restart_events() -> bool:  # each restart's event follows its instance's start
            found = _ok(
                self.http.get(
                    "/events",
                    params={"kind": "instance.ha_restart", "sort": "created_at", "limit": 1000},
                )
            )["items"]
            order[:] = [ids[e["resource_id"]] for e in found if e["resource_id"] in ids]
            return len(order) == len(ha)

        self.until("an event for every restart", restart_events, 10)
        result.notes.append(f"restart order: {', '.join(order)}")
        if self.host_name(self.instance(plain)["host_id"]) != host_name:
            raise ChaosError(f"host-crash: {plain} (not HA) was restarted elsewhere")
        for vm in ha:
            result.counters[vm] = (seen[vm], self._resumed(vm, logs[vm]))
        repaired = time.monotonic()
        self.cluster.start(host)
        self.until(f"{host_name} up again", lambda: self.host(host_name)["state"] == "up")
        result.recovered_s = time.monotonic() - repaired
        return result

    def _resumed(self, vm: str, before: str) -> int:
        """The counter the restarted guest read back from its disk: the first
        ``NUBIS-COUNTER-RESUMED`` its console shows after ``before`` (the console as it
        was at the failure; a new host starts a new console log)."""

        def value() -> int | None:
            text = self.console(vm)
            fresh = text[len(before) :] if text.startswith(before) else text
            found = re.findall(r"NUBIS-COUNTER-RESUMED (\d+)", fresh)
            return int(found[0]) if found else None

        self.until(f"{vm}'s counter read back", lambda: value() is not None)
        resumed = value()
        assert resumed is not None
        return resumed

    def teardown(self) -> None:
        tasks = []
        for inst in self.instances.values():
            resp = self.http.delete(f"/instances/{inst['id']}")
            if resp.status_code == 202:
                tasks.append(resp.json()["task_id"])
        for task_id in tasks:
            self.until(f"task {task_id}", lambda t=task_id: self._task_done(t), 120)


def verdict(results: list[Scenario], most: dict[str, int], limit_s: float) -> list[str]:
    """What failed, as sentences (empty: every promise kept)."""
    problems = []
    for iid, count in most.items():
        if count > 1:
            problems.append(f"instance {iid} ran {count} times at once")
    for r in results:
        if r.restarts_expected and (r.restart_s is None or r.restart_s > limit_s):
            problems.append(f"{r.name}: HA instances back after {r.restart_s} s (> {limit_s} s)")
        for vm, (seen, resumed) in r.counters.items():
            if resumed < seen:
                problems.append(f"{r.name}: {vm} lost data (counter {seen} -> {resumed})")
    return problems


def save_report(
    results: list[Scenario], most: dict[str, int], problems: list[str], where: Path
) -> None:
    where.mkdir(parents=True, exist_ok=True)
    data = {
        "scenarios": [asdict(r) for r in results],
        "most_qemu_processes_per_instance": most,
        "problems": problems,
    }
    (where / "chaos-report.json").write_text(json.dumps(data, indent=2))
    lines = [
        "| scenario | host | detect s | fence s | restart s | back up s | restarted | counters |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    for r in results:
        counters = ", ".join(f"{vm} {a}->{b}" for vm, (a, b) in r.counters.items()) or "-"
        lines.append(
            f"| {r.name} | {r.host} | {fmt(r.detect_s)} | {fmt(r.fence_s)} | "
            f"{fmt(r.restart_s)} | {fmt(r.recovered_s)} | {'; '.join(r.restarted) or 'none'} "
            f"| {counters} |"
        )
    lines.append("")
    lines.append(f"most QEMU processes of one instance at once: {max(most.values(), default=0)}")
    lines += [f"- {n}" for r in results for n in r.notes]
    lines += [f"PROBLEM: {p}" for p in problems] or ["every check passed"]
    (where / "chaos-report.md").write_text("\n".join(lines) + "\n")


def run_chaos(
    http: httpx.Client,
    cluster: DevCluster,
    down_after: float,
    report_dir: Path,
    limit_s: float = 60,
) -> tuple[list[Scenario], list[str]]:
    register_hosts(http, cluster)
    chaos = Chaos(http, cluster, down_after)
    results = chaos.run()
    problems = verdict(results, chaos.watch.most, limit_s)
    save_report(results, chaos.watch.most, problems, report_dir)
    return results, problems


__all__ = ["Chaos", "DevHost", "Scenario", "register_hosts", "run_chaos"]
