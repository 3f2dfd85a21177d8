"""The control plane killed at every step of every task type, then restarted: each
time the recovery must converge to a true state with nothing orphaned.

A step is a point a handler declares (``steps``) and announces (``ctx.step``); the
server exits there (``os._exit``, no clean-up runs, as under SIGKILL) the first time
a task reaches it. After the restart the task is resumed (resumable handlers) or
failed with its resource put back into a true state; then every instance and volume
the test ever made is checked against libvirt (tests/integration/convergence.py).
The last test checks that no declared step was left out.

Servers are forked from a warm parent (tests/integration/zygote.py): a restart takes
about a second instead of the five a fresh Python process needs to import Nubis.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import libvirt
import pytest

from nubis.config import Settings
from nubis.devcluster.hosts import DevCluster, qemu_processes
from nubis.images.tinyimage import build_tiny_iso
from nubis.platform import Platform
from tests.integration.convergence import INTERRUPTED, Made, all_items, check_true_state
from tests.integration.forked import Zygote
from tests.integration.server import READY, NubisServer, running_devcluster

pytestmark = pytest.mark.integration

COVERED: set[str] = set()
# user-data: acpid goes on with an empty configuration, so the power button does nothing
DEAF = """#!/bin/sh
: > /tmp/acpid.conf
mount --bind /tmp/acpid.conf /etc/acpid.conf
killall acpid
sleep 1
echo NUBIS-DEAF
"""


class World:
    """A server that can be killed at a step, and what the test made with it."""

    def __init__(self, srv: NubisServer, fault_file: Path, uris: dict[str, str]) -> None:
        self.srv = srv
        self.fault_file = fault_file
        self.uris = uris
        self.made = Made()

    # -- plain calls ------------------------------------------------------------------
    def accept(self, method: str, path: str, **kw: Any) -> dict:
        resp = self.srv.client.request(method, path, **kw)
        assert resp.status_code == 202, f"{method} {path}: {resp.text}"
        body = resp.json()
        if path == "/instances" and method == "POST":
            self.made.instances.add(body["id"])
        if path == "/volumes" and method == "POST":
            self.made.volumes.add(body["id"])
        return body

    def run(self, method: str, path: str, **kw: Any) -> dict:
        body = self.accept(method, path, **kw)
        task = self.srv.wait_task(body["task_id"])
        assert task["status"] == "succeeded", task
        return body

    def boot(self, name: str, **extra: Any) -> dict:
        body = {"name": name, "image": "nubis-tiny", "flavor": "m1.tiny", **extra}
        return self.run("POST", "/instances", json=body)

    def get(self, path: str) -> dict:
        resp = self.srv.client.get(path)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def clean_up(self) -> None:
        """After a failure: remove what is left (best effort), so the server can stop."""
        self.fault_file.write_text("")
        if self.srv.proc.poll() is not None:
            self.srv.start()
        for iid in self.made.instances:
            self.srv.client.delete(f"/instances/{iid}")
        for vid in self.made.volumes:
            self.srv.client.delete(f"/volumes/{vid}")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and all_items(self.srv, "/instances"):
            time.sleep(0.5)
        for net in all_items(self.srv, "/networks"):
            self.srv.client.delete(f"/networks/{net['id']}")

    # -- a kill -------------------------------------------------------------------------
    def kill_at(self, point: str, trigger: Callable[[], Any]) -> dict:
        """Arm ``point``, run ``trigger``, see the server die there, restart it; the
        task, once recovery has settled it."""
        self.fault_file.write_text(point)
        try:
            answer = trigger()
        except httpx.HTTPError:
            answer = None  # a request that ran the task itself died with the server
        try:
            code = self.srv.wait_exit(120)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{point}: the step was never reached") from None
        assert code == 137, f"{point}: the server exited with {code}"
        self.fault_file.write_text("")
        self.srv.start()
        COVERED.add(point)
        task = self._task(point, answer)
        if task["resource_type"] == "instance":
            self.made.instances.add(task["resource_id"])
        elif task["resource_type"] == "volume":
            self.made.volumes.add(task["resource_id"])
        check_true_state(self.srv, self.made, self.uris)
        task = self.get(f"/tasks/{task['id']}")
        assert task["status"] == "succeeded" or task["error"] == INTERRUPTED, task
        return task

    def _task(self, point: str, answer: Any) -> dict:
        """The task the kill interrupted: from the answer, else the newest of its kind."""
        if isinstance(answer, dict) and "task_id" in answer:
            return self.get(f"/tasks/{answer['task_id']}")
        kind = point.split(":")[0]
        for task in all_items(self.srv, "/tasks", sort="-created_at"):
            if task["kind"] == kind:
                return task
        raise AssertionError(f"{point}: no {kind} task was recorded")


@contextmanager
def world(tmp: Path, zygote: Zygote, uris: dict[str, str], **env: str) -> Iterator[World]:
    """A started World; after a failure what it made is removed first (best effort), so
    the server stops cleanly and the failure is the one reported."""
    fault_file = tmp / "fault"
    fault_file.write_text("")
    srv = NubisServer(
        tmp / "data",
        NUBIS_FAULT_INJECT=f"@{fault_file}",
        NUBIS_RECONCILE_INTERVAL_SECONDS="600",
        NUBIS_STOP_TIMEOUT_SECONDS="3",
        NUBIS_COLLECT_METRICS="false",
        **env,
    )
    srv.spawn = zygote.spawn
    srv.start()
    w = World(srv, fault_file, uris)
    try:
        yield w
    except BaseException:
        w.clean_up()
        raise
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def zygote() -> Iterator[Zygote]:
    z = Zygote()
    yield z
    z.close()


@pytest.fixture(scope="module")
def iso(tmp_path_factory) -> Path:
    return build_tiny_iso(tmp_path_factory.mktemp("iso") / "disc.iso")


def port_filter(port_id: str) -> str:
    """The port's network filter on the host, as libvirt has it."""
    conn = libvirt.open("qemu:///system")
    try:
        return conn.nwfilterLookupByName(f"nubis-port-{port_id}").XMLDesc(0)
    finally:
        conn.close()


def small_qcow2(tmp: Path) -> bytes:
    path = tmp / "up.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", path, "16M"], check=True)
    return path.read_bytes()


def test_every_step_on_one_host(zygote, iso, tmp_path):
    with world(tmp_path, zygote, {"local": "qemu:///system"}) as w:
        single_host_scenarios(w, iso, tmp_path)


def single_host_scenarios(w: World, iso: Path, tmp: Path) -> None:
    disc = w.srv.upload_image(iso, "fi-disc")
    net = w.srv.client.post(
        "/networks",
        json={"name": "fi-net", "mode": "nat", "subnets": [{"cidr": "10.239.7.0/24"}]},
    )
    assert net.status_code == 201, net.text

    # creating: every step; the four instances are then deleted, one step each
    made = {}
    for step in ("image", "disk", "define", "start"):
        body = {"name": f"fi-{step}", "image": "nubis-tiny", "flavor": "m1.tiny"}
        task = w.kill_at(
            f"instance.create:{step}", lambda b=body: w.accept("POST", "/instances", json=b)
        )
        made[step] = task["resource_id"]
        assert w.get(f"/instances/{made[step]}")["status"] == "running"
    for create_step, step in zip(made, ("destroy", "undefine", "disk", "console"), strict=True):
        iid = made[create_step]
        w.kill_at(f"instance.delete:{step}", lambda i=iid: w.accept("DELETE", f"/instances/{i}"))
        assert w.srv.client.get(f"/instances/{iid}").status_code == 404

    # power actions on one instance, whose guest ignores the ACPI power button: its
    # stops end with a destroy
    vm = w.boot("fi-life", user_data=DEAF)["id"]

    def act(action: str) -> Callable[[], dict]:
        return lambda: w.accept("POST", f"/instances/{vm}/actions/{action}")

    def status() -> str:
        return w.get(f"/instances/{vm}")["status"]

    for point, action, after in (
        ("instance.pause:pause", "pause", "paused"),
        ("instance.resume:resume", "resume", "running"),
        ("instance.suspend:save", "suspend", "suspended"),
        ("instance.resume:resume", "resume", "running"),
        ("instance.reboot:reboot", "reboot", "running"),
        ("instance.force-stop:destroy", "force-stop", "stopped"),
        ("instance.start:start", "start", "running"),
        ("instance.stop:shutdown", "stop", "stopped"),
    ):
        w.kill_at(point, act(action))
        assert status() == after, point
    deaf = w.srv.console(vm).count("NUBIS-DEAF")
    w.run("POST", f"/instances/{vm}/actions/start")
    deadline = time.monotonic() + 120
    while w.srv.console(vm).count("NUBIS-DEAF") <= deaf and time.monotonic() < deadline:
        time.sleep(0.5)
    w.kill_at("instance.stop:destroy", act("stop"))
    assert status() == "stopped"
    resize_scenarios(w, vm)

    # media, boot order, NICs
    insert = {"image": disc["id"]}
    w.kill_at("instance.cdrom:copy", lambda: w.accept("PUT", f"/instances/{vm}/cdrom", json=insert))
    assert w.get(f"/instances/{vm}")["cdrom_image_id"] == disc["id"]
    w.kill_at("instance.cdrom:media", lambda: w.accept("DELETE", f"/instances/{vm}/cdrom"))
    assert w.get(f"/instances/{vm}")["cdrom_image_id"] is None
    w.kill_at(
        "instance.boot-order:define",
        lambda: w.accept("PUT", f"/instances/{vm}/boot-order", json={"order": ["cdrom", "disk"]}),
    )
    assert w.get(f"/instances/{vm}")["boot_order"] == ["cdrom", "disk"]
    for step in ("network", "plug"):
        w.kill_at(
            f"instance.attach-nic:{step}",
            lambda: w.accept("POST", f"/instances/{vm}/ports", json={"network": "fi-net"}),
        )
    ports = all_items(w.srv, f"/instances/{vm}/ports")
    assert len(ports) == 2
    w.kill_at(
        "instance.detach-nic:unplug",
        lambda: w.accept("DELETE", f"/instances/{vm}/ports/{ports[0]['id']}"),
    )
    assert len(all_items(w.srv, f"/instances/{vm}/ports")) == 1
    # a live change of the port's security groups, killed once recorded, before the
    # host took it: after the restart the host has what the record says (the port's
    # filter names the new group), and the instance is free again
    left = all_items(w.srv, f"/instances/{vm}/ports")[0]
    group = w.srv.client.post("/security-groups", json={"name": "fi-sg"}).json()
    groups = {"security_groups": ["default", "fi-sg"]}
    w.kill_at(
        "port.update:apply",
        lambda: w.srv.client.put(f"/ports/{left['id']}/security-groups", json=groups),
    )
    assert group["id"] in w.get(f"/ports/{left['id']}")["security_groups"]
    assert w.get(f"/instances/{vm}")["task_state"] is None
    assert f"nubis-sg-{group['id']}" in port_filter(left["id"])

    # templates and snapshots of the (stopped) instance
    for step in ("flatten", "download", "register"):
        w.kill_at(
            f"instance.template:{step}",
            lambda s=step: w.accept(
                "POST", f"/instances/{vm}/actions/create-template", json={"name": f"fi-t-{s}"}
            ),
        )
    snaps = f"/instances/{vm}/snapshots"
    w.kill_at("snapshot.create:snapshot", lambda: w.accept("POST", snaps, json={"name": "s1"}))
    w.kill_at("snapshot.revert:revert", lambda: w.accept("POST", f"{snaps}/s1/actions/revert"))
    w.kill_at("snapshot.delete:delete", lambda: w.accept("DELETE", f"{snaps}/s1"))
    assert w.srv.client.get(f"{snaps}/s1").status_code == 404

    volume_scenarios(w, vm, tmp)

    # made HA, its QEMU dies: restarted in place, by a task killed at its start
    assert w.srv.client.put(f"/instances/{vm}/ha", json={"enabled": True}).status_code == 200
    (pid,) = qemu_processes(f"nubis-{vm}")
    w.kill_at("instance.ha-restart:start", lambda: subprocess.run(["kill", "-9", str(pid)]))
    assert w.get(f"/instances/{vm}")["status"] == "running"
    assert len(qemu_processes(f"nubis-{vm}")) == 1

    w.run("DELETE", f"/instances/{vm}")
    assert w.srv.client.delete("/networks/fi-net").status_code == 204
    assert w.srv.client.delete("/security-groups/fi-sg").status_code == 204
    check_true_state(w.srv, w.made, w.uris)


def resize_scenarios(w: World, vm: str) -> None:
    """Resizes (the disk grows: every step runs) and their reverts, killed at each step;
    the instance ends stopped, at the bigger flavor, the resize confirmed."""
    flavor = {"name": "fi.big", "vcpus": 1, "memory_mib": 192, "disk_gib": 2}
    assert w.srv.client.post("/flavors", json=flavor).status_code == 201

    def resize() -> dict:
        return w.accept("POST", f"/instances/{vm}/actions/resize", json={"flavor": "fi.big"})

    def then(action: str) -> Callable[[], dict]:
        return lambda: w.accept("POST", f"/instances/{vm}/actions/{action}")

    def sizes() -> tuple[int, bool]:
        inst = w.get(f"/instances/{vm}")
        return inst["disk_gib"], inst["resize_from"] is not None

    for resize_step, revert_step in (
        ("shutdown", "shutdown"),
        ("backup", "disk"),
        ("disk", "define"),
    ):
        w.kill_at(f"instance.resize:{resize_step}", resize)
        assert sizes() == (2, True), resize_step
        w.kill_at(f"instance.revert-resize:{revert_step}", then("revert-resize"))
        assert sizes() == (1, False), revert_step
    w.run("POST", f"/instances/{vm}/actions/start")  # a running one is started again
    w.kill_at("instance.resize:define", resize)
    w.kill_at("instance.revert-resize:start", then("revert-resize"))
    assert (w.get(f"/instances/{vm}")["status"], sizes()) == ("running", (1, False))
    w.kill_at("instance.resize:start", resize)
    w.kill_at("instance.confirm-resize:cleanup", then("confirm-resize"))
    assert (w.get(f"/instances/{vm}")["status"], sizes()) == ("running", (2, False))
    w.run("POST", f"/instances/{vm}/actions/stop")


def move_scenarios(w: World, vm: str, volume: str) -> str:
    """The running instance's volume moved live between two pools, killed at each
    step: it ends in one pool, as one file, attached, the guest still running. The
    second pool's directory."""
    other = tempfile.mkdtemp(prefix="nubis-test-pool-", dir="/var/tmp")
    os.chmod(other, 0o755)
    w.made.pool_dirs.append(other)
    body = {"name": "fi-pool2", "kind": "dir", "path": other, "host": "local"}
    assert w.srv.client.post("/storage-pools", json=body).status_code == 201
    pools = {p["id"]: p["name"] for p in all_items(w.srv, "/storage-pools")}
    for step in ("allocate", "copy", "switch", "release"):
        there = pools[w.get(f"/volumes/{volume}")["pool_id"]]
        to = "fi-pool2" if there == "fi-pool" else "fi-pool"
        w.kill_at(
            f"volume.migrate:{step}",
            lambda t=to: w.accept("POST", f"/volumes/{volume}/actions/migrate", json={"pool": t}),
        )
        moved = w.get(f"/volumes/{volume}")
        assert (pools[moved["pool_id"]], moved["status"]) == (to, "in-use"), (step, moved)
        files = [f for d in w.made.pool_dirs for f in os.listdir(d) if volume in f]
        assert len(files) == 1, (step, files)
        assert w.get(f"/instances/{vm}")["status"] == "running"
    return other


def volume_scenarios(w: World, vm: str, tmp: Path) -> None:
    # QEMU runs as its own user: the pool's directory must let it in
    pool_dir = tempfile.mkdtemp(prefix="nubis-test-pool-", dir="/var/tmp")
    os.chmod(pool_dir, 0o755)
    w.made.pool_dirs.append(pool_dir)
    body = {"name": "fi-pool", "kind": "dir", "path": pool_dir, "host": "local"}
    assert w.srv.client.post("/storage-pools", json=body).status_code == 201
    v1 = w.kill_at(
        "volume.create:allocate",
        lambda: w.accept("POST", "/volumes", json={"name": "fi-v1", "size_gib": 1}),
    )["resource_id"]
    w.kill_at(
        "volume.extend:resize",
        lambda: w.accept("POST", f"/volumes/{v1}/actions/extend", json={"size_gib": 2}),
    )
    assert w.get(f"/volumes/{v1}")["size_gib"] == 2
    w.kill_at(
        "volume.attach:plug",
        lambda: w.accept("POST", f"/instances/{vm}/volumes", json={"volume": v1}),
    )
    assert w.get(f"/volumes/{v1}")["status"] == "in-use"
    booted = w.srv.console(vm).count(READY)
    w.run("POST", f"/instances/{vm}/actions/start")
    w.srv.wait_console(vm, booted + 1)  # ready for hot-plug (the detach below)
    other = move_scenarios(w, vm, v1)
    snaps = f"/volumes/{v1}/snapshots"
    for name, step in (("vs1", "freeze"), ("vs2", "copy"), ("vs3", "merge")):
        w.kill_at(
            f"volume.snapshot:{step}", lambda n=name: w.accept("POST", snaps, json={"name": n})
        )
    w.kill_at("volume.detach:unplug", lambda: w.accept("DELETE", f"/instances/{vm}/volumes/{v1}"))
    assert w.get(f"/volumes/{v1}")["status"] == "available"
    for name, step in (("vs1", "copy"), ("vs2", "switch"), ("vs1", "redefine"), ("vs2", "cleanup")):
        w.kill_at(
            f"volume.snapshot-revert:{step}",
            lambda n=name: w.accept("POST", f"{snaps}/{n}/actions/revert"),
        )
    w.kill_at("volume.snapshot-delete:delete", lambda: w.accept("DELETE", f"{snaps}/vs3"))
    vs1 = w.get(f"{snaps}/vs1")["id"]
    v2 = w.kill_at(
        "volume.create:copy",
        lambda: w.accept("POST", "/volumes", json={"name": "fi-v2", "snapshot": vs1}),
    )["resource_id"]
    for step in ("flatten", "download", "register"):
        w.kill_at(
            f"volume.template:{step}",
            lambda s=step: w.accept(
                "POST", f"/volumes/{v2}/actions/create-template", json={"name": f"fi-vt-{s}"}
            ),
        )
    w.kill_at("volume.download:stream", lambda: w.srv.client.get(f"/volumes/{v2}/download"))
    body = small_qcow2(tmp)
    for step in ("stream", "finish"):
        w.kill_at(
            f"volume.upload:{step}",
            lambda s=step: w.srv.client.post(
                "/volumes/upload",
                params={"name": f"fi-up-{s}"},
                content=body,
                headers={"Content-Type": "application/octet-stream"},
            ),
        )
        assert w.srv.client.get(f"/volumes/fi-up-{step}").status_code == 404
    v3 = w.run("POST", "/volumes", json={"name": "fi-v3", "size_gib": 1, "secure_delete": True})[
        "id"
    ]
    w.kill_at("volume.delete:wipe", lambda: w.accept("DELETE", f"/volumes/{v3}"))
    for name in ("vs1", "vs2"):
        w.run("DELETE", f"{snaps}/{name}")
    w.kill_at("volume.delete:delete", lambda: w.accept("DELETE", f"/volumes/{v1}"))
    for vid in (v1, v3):
        assert w.srv.client.get(f"/volumes/{vid}").status_code == 404
    w.run("DELETE", f"/volumes/{v2}")
    for name, path in (("fi-pool", pool_dir), ("fi-pool2", other)):
        assert w.srv.client.delete(f"/storage-pools/{name}").status_code == 204
        assert os.listdir(path) == []
        shutil.rmtree(path)
        w.made.pool_dirs.remove(path)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with running_devcluster(tmp_path_factory.mktemp("devcluster"), 2) as c:
        yield c


def test_every_step_across_hosts(zygote, iso, cluster, tmp_path):
    uris = {h.name: h.uri for h in cluster.hosts()}
    with world(
        tmp_path,
        zygote,
        uris,
        NUBIS_REGISTER_LOCAL_HOST="false",
        NUBIS_HOST_DOWN_AFTER_SECONDS="3",
        NUBIS_HA_CHECK_INTERVAL_SECONDS="1",
    ) as w:
        multi_host_scenarios(w, iso, cluster)


def multi_host_scenarios(w: World, iso: Path, cluster: DevCluster) -> None:
    client = w.srv.client
    settings = {"name": "fi", "trust_shared_storage": True}
    assert client.post("/clusters", json=settings).status_code == 201
    for host in cluster.hosts():
        resp = client.post("/hosts", json={"name": host.name, "uri": host.uri, "cluster": "fi"})
        assert resp.status_code == 201, resp.text
    disc = w.srv.upload_image(iso, "fi-disc")
    vm = w.boot("fi-mover", host="dev-1", cluster="fi")["id"]
    w.run("PUT", f"/instances/{vm}/cdrom", json={"image": disc["id"]})

    def where() -> str:
        return w.get(f"/hosts/{w.get(f'/instances/{vm}')['host_id']}")["name"]

    # live migrations, killed at each step: never migrated twice, never lost
    for step in ("copy-disc", "networks", "disks", "migrate", "clean-up"):
        w.kill_at(
            f"instance.migrate:{step}",
            lambda: w.accept("POST", f"/instances/{vm}/actions/migrate", json={}),
        )
        assert w.get(f"/instances/{vm}")["status"] == "running"
    # draining a host: the resumed drain moves what is left
    source = where()
    w.kill_at(
        "host.maintenance:drain",
        lambda: w.accept("POST", f"/hosts/{source}/actions/maintenance"),
    )
    assert where() != source and w.get(f"/hosts/{source}")["maintenance"] == "active"
    assert client.post(f"/hosts/{source}/actions/exit-maintenance").status_code == 200

    # evacuating a dead host (no fencing: confirmed by hand)
    dead = cluster.host(where())
    uris = dict(w.uris)
    w.uris = {n: u for n, u in uris.items() if n != dead.name}
    dead.kill()
    w.srv.wait_field(f"/hosts/{dead.name}", "state", "down", timeout=60)
    w.kill_at(
        "host.evacuate:restart",
        lambda: w.accept(
            "POST", f"/hosts/{dead.name}/actions/evacuate", json={"confirm_host_down": True}
        ),
    )
    assert where() != dead.name and w.get(f"/instances/{vm}")["status"] == "running"
    dead.start(cluster.shared)
    w.srv.wait_field(f"/hosts/{dead.name}", "state", "up", timeout=60)
    w.uris = uris

    # failover: the lockspace proves the dead host's VMs stopped; the task that restarts
    # them is killed and resumed
    resp = client.patch("/clusters/fi", json={"ha_lockspace": str(cluster.lockspace)})
    assert resp.status_code == 200, resp.text
    ha = w.boot("fi-ha", host=dead.name, cluster="fi", ha=True)["id"]
    w.uris = {n: u for n, u in uris.items() if n != dead.name}
    w.kill_at("host.failover:restart", dead.kill)
    on = w.get(f"/hosts/{w.get(f'/instances/{ha}')['host_id']}")["name"]
    assert on != dead.name and w.get(f"/instances/{ha}")["status"] == "running"
    dead.start(cluster.shared)
    w.srv.wait_field(f"/hosts/{dead.name}", "state", "up", timeout=60)
    w.uris = uris
    for iid in (vm, ha):
        w.run("DELETE", f"/instances/{iid}")
    check_true_state(w.srv, w.made, w.uris)


def test_no_step_was_left_out(tmp_path):
    """Every step every handler declares was killed at above (and declared steps are
    the only ones a handler can announce: TaskContext.step refuses others)."""
    settings = Settings(
        data_dir=tmp_path / "data",
        register_local_host=False,
        build_tiny_image=False,
        task_workers=0,
    )
    platform = Platform(settings)
    declared = {
        f"{kind}:{step}" for kind, h in platform.engine.handlers.items() for step in h.steps
    }
    assert all(h.steps for h in platform.engine.handlers.values())
    assert declared - COVERED == set()
