"""A real Nubis server process for integration tests, and helpers to drive it."""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import libvirt

from nubis.devcluster.hosts import DevCluster
from nubis.drivers.libvirt import storage

READY = "NUBIS-GUEST-READY"


# devclusters side by side: each slot has its own addresses (172.30.0.11.., 172.30.20.11..)
SLOTS = 2
SLOT_OFFSET = 20


@contextmanager
def devcluster_slot() -> Iterator[int]:
    """A free devcluster slot (its address offset) for this test worker, held until the
    end; when every slot is taken, wait for the first."""
    files = [open(f"/tmp/nubis-devcluster-slot-{i}.lock", "w") for i in range(SLOTS)]
    try:
        for i, fh in enumerate(files):
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            held = i
            break
        else:
            fcntl.flock(files[0], fcntl.LOCK_EX)
            held = 0
        try:
            yield held * SLOT_OFFSET
        finally:
            fcntl.flock(files[held], fcntl.LOCK_UN)
    finally:
        for fh in files:
            fh.close()


@contextmanager
def serving(tmp_path_factory: Any, **env: str) -> Iterator[NubisServer]:
    """A started server with its own data directory, stopped (and checked) after; the
    periodic reconciliation is slowed to 10 minutes unless ``env`` says otherwise."""
    data = tmp_path_factory.mktemp("nubis") / "data"
    srv = NubisServer(data, **{"NUBIS_RECONCILE_INTERVAL_SECONDS": "600", **env}).start()
    try:
        yield srv
    finally:
        srv.stop()


def free_port(address: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on at ``address`` now."""
    with socket.socket() as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


class NubisServer:
    def __init__(self, data_dir: Path, **env: str) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.env = env
        self.proc: Any = None  # a Popen, or a process forked by a zygote (forked.py)
        self.client: httpx.Client | None = None
        # how to start the server process: (environment, log file) -> a Popen-like
        self.spawn: Callable[[dict[str, str], Path], Any] | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> Path:
        """The certificate the server made on its first start: what clients trust."""
        return self.data_dir / "tls" / "cert.pem"

    @property
    def log_path(self) -> Path:
        """What the server process prints (every start of it, one after the other)."""
        return self.data_dir.parent / f"server-{self.port}.log"

    def start(self, **extra_env: str) -> NubisServer:
        env = {
            **os.environ,
            "NUBIS_DATA_DIR": str(self.data_dir),
            "NUBIS_LISTEN_PORT": str(self.port),
            "NUBIS_STOP_TIMEOUT_SECONDS": "30",
            # servers of the tests share one libvirtd: only the test of the first run
            # (test_first_run.py) has the default pool and network made
            "NUBIS_FIRST_RUN_DEFAULTS": "0",
            **self.env,
            **extra_env,
        }
        log_path = self.log_path
        if self.spawn is not None:
            self.proc = self.spawn(env, log_path)
        else:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "nubis.cli.main", "serve"],
                env=env,
                stdout=open(log_path, "ab"),
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
            try:
                health = httpx.get(f"{self.url}/api/v1/health", timeout=1, verify=self.verify())
                if health.status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            raise RuntimeError("server did not come up")
        password = (self.data_dir / "admin-password").read_text().strip()
        token = httpx.post(
            f"{self.url}/api/v1/auth/tokens",
            json={"username": "admin", "password": password},
            verify=self.verify(),
        ).json()["token"]
        self.client = httpx.Client(
            base_url=f"{self.url}/api/v1",
            headers={"Authorization": f"Bearer {token}"},
            timeout=120,
            verify=self.verify(),
        )
        return self

    def verify(self) -> ssl.SSLContext | bool:
        """The server's own certificate as the only CA (not there yet: nothing can
        connect, the poll above tries again)."""
        if not self.ca_file.exists():
            return ssl.create_default_context()  # trusts nothing of ours: fails
        return ssl.create_default_context(cafile=str(self.ca_file))

    def wait_exit(self, timeout: float = 120) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def remove_images(self) -> None:
        """Delete every image through the API (so their copies leave the host pool)
        and check that none of them is left on the host."""
        ids = [i["id"] for i in self.client.get("/images", params={"limit": 1000}).json()["items"]]
        for image_id in ids:
            resp = self.client.delete(f"/images/{image_id}")
            assert resp.status_code == 204, resp.text
        left = [v for image_id in ids for v in libvirt_leftovers(image_id)]
        assert left == [], f"image copies left on the host: {left}"

    def restart(self) -> NubisServer:
        """Stop the process (its images stay) and start it again on the same data."""
        self.terminate()
        return self.start()

    def stop(self) -> None:
        """Remove the images this server made (when it is still up), then stop it."""
        try:
            if self.proc is not None and self.proc.poll() is None and self.client is not None:
                self.remove_images()
        finally:
            self.terminate()

    def terminate(self) -> None:
        """Stop the process cleanly (SIGTERM); its images and data stay."""
        if self.client is not None:
            # first: uvicorn's shutdown waits for open keep-alive connections to close
            self.client.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    # -- helpers --------------------------------------------------------------------
    def boot(self, name: str, **body: Any) -> dict:
        """A tiny guest created (``body`` adds to or changes the request), booted to its
        console's ready line; the instance."""
        request = {"name": name, "image": "nubis-tiny", "flavor": "m1.tiny", **body}
        resp = self.client.post("/instances", json=request)
        assert resp.status_code == 202, resp.text
        task = self.wait_task(resp.json()["task_id"])
        assert task["status"] == "succeeded", task
        self.wait_console(resp.json()["id"])
        return self.instance(resp.json()["id"])

    def upload_image(self, path: Path, name: str) -> dict:
        """Register the file as an image (streamed up as the API takes it)."""
        with open(path, "rb") as fh:
            resp = self.client.post(
                "/images",
                params={"name": name},
                content=fh,
                headers={"Content-Type": "application/octet-stream"},
            )
        assert resp.status_code == 201, resp.text
        return resp.json()

    def wait_task(self, task_id: str, timeout: float = 180) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            task = self.client.get(f"/tasks/{task_id}").json()
            if task["status"] in ("succeeded", "failed"):
                return task
            time.sleep(0.2)
        raise AssertionError(f"task {task_id} did not finish: {task}")

    def instance(self, ref: str) -> dict:
        resp = self.client.get(f"/instances/{ref}")
        assert resp.status_code == 200, resp.text
        return resp.json()

    def act(self, ref: str, action: str) -> dict:
        resp = self.client.post(f"/instances/{ref}/actions/{action}")
        assert resp.status_code == 202, resp.text
        task = self.wait_task(resp.json()["task_id"])
        assert task["status"] == "succeeded", task
        return task

    def console(self, ref: str) -> str:
        resp = self.client.get(f"/instances/{ref}/console-log", params={"max_bytes": 1 << 20})
        assert resp.status_code == 200, resp.text
        return resp.text

    def wait_console(
        self, ref: str, count: int = 1, timeout: float = 120, marker: str = READY
    ) -> str:
        """The console log once ``marker`` is in it ``count`` times."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.console(ref)
            if text.count(marker) >= count:
                return text
            time.sleep(0.5)
        raise AssertionError(f"{marker} x{count} not seen; console:\n{text[-2000:]}")

    def wait_field(self, path: str, field: str, value: Any, timeout: float = 30) -> dict:
        """GET ``path`` until its ``field`` is ``value``; the answer."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.client.get(path).json()
            if found[field] == value:
                return found
            time.sleep(0.2)
        raise AssertionError(f"{path}: {field} is {found[field]!r}, expected {value!r}")

    def wait_status(self, ref: str, status: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            inst = self.instance(ref)
            if inst["status"] == status and inst["task_state"] is None:
                return inst
            time.sleep(0.1)
        raise AssertionError(f"instance {ref} is {inst['status']}, expected {status}")


def libvirt_leftovers(instance_id: str, uri: str = "qemu:///system") -> list[str]:
    """Every libvirt object of an instance that still exists (empty when all is clean)."""
    conn = libvirt.open(uri)
    try:
        left = []
        try:
            conn.lookupByUUIDString(instance_id)
            left.append(f"domain nubis-{instance_id}")
        except libvirt.libvirtError:
            pass
        for pool_name in ("nubis-disks", "nubis-console"):
            try:
                pool = conn.storagePoolLookupByName(pool_name)
            except libvirt.libvirtError:
                continue  # no such pool on this libvirtd: nothing can be left in it
            # waits while another server streams into the shared pool (refused then)
            storage.refresh(pool)
            left += [f"{pool_name}/{v}" for v in pool.listVolumes() if instance_id in v]
        return left
    finally:
        conn.close()


@contextmanager
def running_devcluster(base: Path, hosts: int, shared_disks: bool = True) -> Iterator[DevCluster]:
    """A devcluster of ``hosts`` hosts for a test module, removed (and checked) after."""
    with devcluster_slot() as offset:
        cluster = DevCluster(base, offset, shared_disks)
        cluster.up(hosts)
        try:
            yield cluster
        finally:
            cluster.down(purge=True)


def cli_runner(server: NubisServer, token_file: Path, **extra_env: str) -> Callable[..., Any]:
    """``run(*args, ok=True)``: the `nubis` CLI against ``server`` in a clean environment
    (its own token file); ``ok`` asserts it exited 0."""
    env = {
        "NUBIS_URL": server.url,
        "NUBIS_CA_FILE": str(server.ca_file),
        "NUBIS_TOKEN_FILE": str(token_file),
        "PATH": "/usr/bin:/bin",
        "COLUMNS": "200",
        # a checkout run with PYTHONPATH: the CLI from the same source as the server
        **({"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}),
        **extra_env,
    }

    def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [sys.executable, "-m", "nubis.cli.main", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if ok:
            assert proc.returncode == 0, proc.stderr
        return proc

    return run
