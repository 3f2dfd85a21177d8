"""Simulated hosts: real libvirtd daemons on this machine, one per mount namespace.

Each host ``dev-<i>`` runs ``virtlogd`` and ``libvirtd`` in its own mount
namespace, where a tmpfs covers ``/run`` and per-host directories are bound
over ``/etc/libvirt``, ``/var/lib/libvirt``, ``/var/log/libvirt`` and
``/var/cache/libvirt``. One shared directory is bound at the same path
(``/var/lib/libvirt/nubis/disks``) in every host: the cluster's shared primary
storage. A second shared directory (``/var/lib/libvirt/nubis/locks``) is the
lockspace of the hosts' ``virtlockd``: libvirt's lock manager takes a lease there
for every disk a QEMU process opens, so no two hosts can run the same disk, and a
lease still held says the VM is still running. Host ``i`` listens for libvirt's
remote protocol on TCP at ``127.0.0.(10+i)`` without authentication: a test bed, never a deployment.

Nothing is mounted in the caller's namespace; a host's namespace (and every
mount in it) ends with its last process, so killing a host's processes is
both a host crash and a complete clean-up.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

DEFAULT_BASE = Path("/var/lib/nubis-devcluster")
TCP_PORT = 16509
SHARED_MOUNTPOINT = "/var/lib/libvirt/nubis/disks"
LOCKS_MOUNTPOINT = "/var/lib/libvirt/nubis/locks"
BOUND = ("etc", "lib", "log", "cache")  # per-host dirs bound over the libvirt paths

LAUNCH = r"""
set -e
mount -t tmpfs -o mode=755 tmpfs /run
mount --bind "$H/etc" /etc/libvirt
mount --rbind "$H/lib" /var/lib/libvirt
mkdir -p /var/lib/libvirt/nubis/disks
mount --bind "$SHARED" /var/lib/libvirt/nubis/disks
mkdir -p /var/lib/libvirt/nubis/locks
mount --bind "$LOCKS" /var/lib/libvirt/nubis/locks
mount --bind "$H/log" /var/log/libvirt
mount --bind "$H/cache" /var/cache/libvirt
virtlogd -d -p "$H/virtlogd.pid"
virtlockd -d -p "$H/virtlockd.pid"
libvirtd -d -l -p "$H/libvirtd.pid"
"""


class DevClusterError(RuntimeError):
    pass


@dataclass(frozen=True)
class DevHost:
    index: int
    base: Path

    @property
    def name(self) -> str:
        return f"dev-{self.index}"

    @property
    def address(self) -> str:
        return f"127.0.0.{10 + self.index}"

    @property
    def uri(self) -> str:
        return f"qemu+tcp://{self.address}/system"

    @property
    def dir(self) -> Path:
        return self.base / "hosts" / self.name

    @property
    def pidfile(self) -> Path:
        return self.dir / "libvirtd.pid"

    # -- state ------------------------------------------------------------------------
    def libvirtd_pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            return None
        return pid if exe.endswith("libvirtd") else None

    def namespace(self) -> str | None:
        pid = self.libvirtd_pid()
        if pid is None:
            return None
        try:
            return os.readlink(f"/proc/{pid}/ns/mnt")
        except OSError:
            return None

    def processes(self) -> list[int]:
        """Every process living in this host's mount namespace (libvirtd, qemu, ...)."""
        ns = self.namespace()
        if ns is None or ns == os.readlink("/proc/self/ns/mnt"):
            return []
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if os.readlink(entry / "ns/mnt") == ns:
                        pids.append(int(entry.name))
                except OSError:
                    continue
        return pids

    def listening(self) -> bool:
        try:
            with socket.create_connection((self.address, TCP_PORT), timeout=0.5):
                return True
        except OSError:
            return False

    # -- actions ----------------------------------------------------------------------
    def prepare(self, shared: Path) -> None:
        for sub in BOUND:
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        etc = self.dir / "etc"
        (etc / "libvirtd.conf").write_text(
            "listen_tls = 0\n"
            "listen_tcp = 1\n"
            f'listen_addr = "{self.address}"\n'
            f'tcp_port = "{TCP_PORT}"\n'
            'auth_tcp = "none"\n'
        )
        qemu_conf = Path("/etc/libvirt/qemu.conf")
        base_conf = qemu_conf.read_text() if qemu_conf.exists() else ""
        (etc / "qemu.conf").write_text(
            base_conf
            + "\n# nubis devcluster host\n"
            + f'migration_address = "{self.address}"\n'
            + f'migration_host = "{self.address}"\n'
            # keep QEMU in the host's mount namespace (libvirt would give each domain
            # its own), so the host's processes are exactly its namespace's
            + "namespaces = []\n"
            # the hosts share one network namespace: give each its own VNC ports
            + f"remote_display_port_min = {6000 + 100 * self.index}\n"
            + f"remote_display_port_max = {6099 + 100 * self.index}\n"
            # disk leases in the shared lockspace (virtlockd)
            + 'lock_manager = "lockd"\n'
        )
        (etc / "qemu-lockd.conf").write_text(
            "auto_disk_leases = 1\n"
            "require_lease_for_disks = 1\n"
            f'file_lockspace_dir = "{LOCKS_MOUNTPOINT}"\n'
        )
        for name in ("virtlogd.conf", "libvirt.conf"):
            src = Path("/etc/libvirt") / name
            if src.exists() and not (etc / name).exists():
                shutil.copy2(src, etc / name)
        shared.mkdir(parents=True, exist_ok=True)
        locks_of(shared).mkdir(parents=True, exist_ok=True)

    def start(self, shared: Path, timeout: float = 30) -> None:
        if self.libvirtd_pid() is not None:
            return
        self.prepare(shared)
        env = {
            **os.environ,
            "H": str(self.dir),
            "SHARED": str(shared),
            "LOCKS": str(locks_of(shared)),
        }
        proc = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", LAUNCH],
            env=env,
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise DevClusterError(f"{self.name}: launch failed: {proc.stderr.strip()}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.libvirtd_pid() is not None and self.listening():
                return
            time.sleep(0.1)
        raise DevClusterError(f"{self.name}: libvirtd did not listen on {self.address}")

    def kill(self, timeout: float = 10) -> None:
        """A host crash: SIGKILL to libvirtd, its qemu processes and everything else
        in its namespace; the namespace and its mounts go with the last of them."""
        for _ in range(3):  # a process may fork while we look
            pids = self.processes()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and any(alive(p) for p in pids):
                time.sleep(0.05)
        self.pidfile.unlink(missing_ok=True)
        (self.dir / "virtlogd.pid").unlink(missing_ok=True)
        (self.dir / "virtlockd.pid").unlink(missing_ok=True)


def locks_of(shared: Path) -> Path:
    """The lockspace beside the shared disks, as this (the control plane's) namespace
    sees it: give it to Nubis as the cluster's ``ha_lockspace``."""
    return shared.parent / "locks"


def alive(pid: int) -> bool:
    """True while the process runs (a zombie, dead but not reaped, is not alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purpose
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


class DevCluster:
    def __init__(self, base: Path = DEFAULT_BASE) -> None:
        self.base = base

    @property
    def shared(self) -> Path:
        return self.base / "shared"

    @property
    def lockspace(self) -> Path:
        return locks_of(self.shared)

    def hosts(self) -> list[DevHost]:
        root = self.base / "hosts"
        if not root.exists():
            return []
        indexes = sorted(
            int(p.name.split("-")[1]) for p in root.iterdir() if p.name.startswith("dev-")
        )
        return [DevHost(i, self.base) for i in indexes]

    def host(self, name: str) -> DevHost:
        for host in self.hosts():
            if host.name == name:
                return host
        raise DevClusterError(f"no devcluster host named {name!r}")

    def up(self, count: int) -> list[DevHost]:
        if not 1 <= count <= 200:
            raise DevClusterError("--hosts must be between 1 and 200")
        hosts = [DevHost(i, self.base) for i in range(1, count + 1)]
        for host in hosts:
            host.start(self.shared)
        return hosts

    def down(self, purge: bool = False) -> None:
        for host in self.hosts():
            host.kill()
        if purge and self.base.exists():
            shutil.rmtree(self.base)

    def status(self) -> list[dict[str, object]]:
        return [
            {
                "name": h.name,
                "uri": h.uri,
                "running": h.libvirtd_pid() is not None,
                "listening": h.listening(),
                "processes": len(h.processes()),
            }
            for h in self.hosts()
        ]
