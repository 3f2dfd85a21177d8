"""Simulated hosts: real libvirtd daemons on this machine, each in its own mount and
network namespaces.

Each host ``dev-<i>`` runs ``virtlogd`` and ``libvirtd`` in its own network
namespace, joined to the devcluster's underlay bridge (``underlay``), and in its
own mount namespace, where a tmpfs covers ``/run`` and per-host directories are bound
over ``/etc/libvirt``, ``/var/lib/libvirt``, ``/var/log/libvirt`` and
``/var/cache/libvirt``. One shared directory is bound at the same path
(``/var/lib/libvirt/nubis/disks``) in every host: the cluster's shared primary
storage. A second shared directory (``/var/lib/libvirt/nubis/locks``) is the
lockspace of the hosts' ``virtlockd``: libvirt's lock manager takes a lease there
for every disk a QEMU process opens, so no two hosts can run the same disk, and a
lease still held says the VM is still running. Host ``i`` listens for libvirt's
remote protocol on TCP at its underlay address without authentication: a test bed,
never a deployment.

Nothing is mounted in the caller's namespace; a host's mount namespace (and every
mount in it) ends with its last process, and its network namespace is deleted when
it is killed, so killing a host is both a host crash and a complete clean-up.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from nubis.agent import DEFAULT_PORT as AGENT_PORT
from nubis.devcluster import underlay

DEFAULT_BASE = Path("/var/lib/nubis-devcluster")
TCP_PORT = 16509
SHARED_MOUNTPOINT = "/var/lib/libvirt/nubis/disks"
LOCKS_MOUNTPOINT = "/var/lib/libvirt/nubis/locks"
OWN_DISKS = "own-disks"  # marker in the base directory: hosts share no disk directory
BOUND = ("etc", "lib", "log", "cache")  # per-host dirs bound over the libvirt paths

LAUNCH = r"""
set -e
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/lock
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
"$PYTHON" -m nubis.agent --listen "$ADDRESS" --token-file "$TOKEN" >"$H/agent.log" 2>&1 &
echo $! > "$H/agent.pid"
"""


class DevClusterError(RuntimeError):
    pass


@dataclass(frozen=True)
class DevHost:
    index: int
    base: Path
    # shifts the addresses and ports, so two devclusters can run side by side
    offset: int = 0

    @property
    def name(self) -> str:
        return f"dev-{self.index}"

    @property
    def address(self) -> str:
        return underlay.host_address(self.offset, self.index)

    @property
    def agent_url(self) -> str:
        return f"http://{self.address}:{AGENT_PORT}"

    @property
    def netns(self) -> str:
        return underlay.netns_name(self.offset, self.index)

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
        return _daemon_pid(self.pidfile, "libvirtd")

    def namespace(self) -> str | None:
        """The host's mount namespace, found through its libvirtd, or its virtlockd when
        libvirtd is dead (the host and its VMs may live on)."""
        candidates = [self.libvirtd_pid(), _daemon_pid(self.dir / "virtlockd.pid", "virtlockd")]
        for pid in candidates:
            if pid is None:
                continue
            try:
                return os.readlink(f"/proc/{pid}/ns/mnt")
            except OSError:
                continue
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

    def listening(self, port: int = TCP_PORT) -> bool:
        try:
            with socket.create_connection((self.address, port), timeout=0.5):
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
        # libvirt's stock filters (clean-traffic and the rest), which port filters use;
        # not the filters Nubis made on this machine's own libvirtd, which come and go
        # as they are copied (a file listed, then gone: the copy failed)
        stock = Path("/etc/libvirt/nwfilter")
        if stock.is_dir() and not (etc / "nwfilter").exists():
            shutil.copytree(stock, etc / "nwfilter", ignore=shutil.ignore_patterns("nubis-*"))
        shared.mkdir(parents=True, exist_ok=True)
        locks_of(shared).mkdir(parents=True, exist_ok=True)

    def start(self, shared: Path, timeout: float = 30) -> None:
        if self.libvirtd_pid() is not None:
            return
        if self.processes():  # what is left of a host whose libvirtd died: power it off
            self.kill()
        self.prepare(shared)
        env = {
            **os.environ,
            "H": str(self.dir),
            "SHARED": str(shared),
            "LOCKS": str(locks_of(shared)),
            "ADDRESS": self.address,
            "PYTHON": sys.executable,
            "TOKEN": str(agent_token_file(self.base)),
        }
        underlay.plug(self.offset, self.index)
        proc = subprocess.run(
            underlay.in_netns(
                self.offset,
                self.index,
                ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", LAUNCH],
            ),
            env=env,
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise DevClusterError(f"{self.name}: launch failed: {proc.stderr.strip()}")
        self.wait_listening(timeout)

    def wait_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.libvirtd_pid() is not None and self.listening() and self.listening(AGENT_PORT):
                return
            time.sleep(0.1)
        raise DevClusterError(
            f"{self.name}: libvirtd or the agent did not listen on {self.address} "
            f"(see {self.dir / 'agent.log'})"
        )

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
        underlay.unplug(self.offset, self.index)
        self.pidfile.unlink(missing_ok=True)
        (self.dir / "virtlogd.pid").unlink(missing_ok=True)
        (self.dir / "virtlockd.pid").unlink(missing_ok=True)


# -- partial failures, for the chaos suite ----------------------------------------------
def kill_libvirtd(host: DevHost) -> None:
    """libvirtd dies; its QEMU processes and virtlockd (holding their leases) live on."""
    pid = host.libvirtd_pid()
    if pid is None:
        raise DevClusterError(f"{host.name}: libvirtd is not running")
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def restart_libvirtd(host: DevHost, timeout: float = 30) -> None:
    """Start libvirtd again inside the host's namespace (entered through any process
    still living there); it takes its running QEMU processes back."""
    survivors = [p for p in host.processes() if alive(p)]
    if not survivors:
        raise DevClusterError(f"{host.name}: nothing is left of the host to restart libvirtd in")
    proc = subprocess.run(
        [
            "nsenter",
            f"--mount=/proc/{survivors[0]}/ns/mnt",
            f"--net=/proc/{survivors[0]}/ns/net",
            "libvirtd",
            "-d",
            "-l",
            "-p",
            str(host.pidfile),
        ],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise DevClusterError(f"{host.name}: libvirtd did not start: {proc.stderr.strip()}")
    host.wait_listening(timeout)


def _port_rule(host: DevHost, action: str) -> list[str]:
    rule = ["INPUT", "-p", "tcp", "--dport", str(TCP_PORT), "-j", "DROP"]
    return underlay.in_netns(host.offset, host.index, ["iptables", action, *rule])


def block_port(host: DevHost) -> None:
    """Cut the management network: every packet to the host's libvirt port is dropped
    in the host's network stack (established connections included); the host and its
    VMs keep running."""
    subprocess.run(_port_rule(host, "-I"), check=True, capture_output=True)


def unblock_port(host: DevHost) -> None:
    while subprocess.run(_port_rule(host, "-D"), capture_output=True).returncode == 0:
        pass  # every copy of the rule


def qemu_processes(domain: str) -> list[int]:
    """Every QEMU process on this machine, whatever its host, running ``domain``."""
    name = f"guest={domain}"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if any(a == name or a.startswith(name + ",") for a in args) and alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def _daemon_pid(pidfile: Path, daemon: str) -> int | None:
    """The pid in ``pidfile`` if that process is still ``daemon``."""
    try:
        pid = int(pidfile.read_text().strip())
        exe = os.readlink(f"/proc/{pid}/exe")
    except (OSError, ValueError):
        return None
    return pid if exe.endswith(daemon) else None


def agent_token_file(base: Path) -> Path:
    """The hosts' network agent token (made once per devcluster, readable by root only)."""
    path = base / "agent-token"
    if not path.exists():
        base.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(32))
    return path


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
    """Hosts dev-1..dev-N at 172.30.<offset>.11...; the offset is kept in the base
    directory (``offset`` file), so every later command finds the same addresses."""

    def __init__(
        self, base: Path = DEFAULT_BASE, offset: int | None = None, shared_disks: bool = True
    ) -> None:
        self.base = base
        # hosts with their own disk directories (no shared storage): kept in the base
        # directory (``own-disks``) too; the lockspace is then each host's own
        self.shared_disks = shared_disks and not (base / OWN_DISKS).exists()
        if offset is None:
            try:
                offset = int((base / "offset").read_text())
            except (OSError, ValueError):
                offset = 0
        if not 0 <= offset <= 40:
            raise DevClusterError("the address offset must be between 0 and 40")
        self.offset = offset

    @property
    def shared(self) -> Path:
        return self.base / "shared"

    @property
    def lockspace(self) -> Path | None:
        """The lockspace the hosts share (None: each host has its own disks and locks)."""
        return locks_of(self.shared) if self.shared_disks else None

    def disks_of(self, host: DevHost) -> Path:
        """The directory bound as the host's disk pool: the shared one, or its own."""
        return self.shared if self.shared_disks else self.base / "own" / host.name / "disks"

    def start(self, host: DevHost) -> None:
        """Start a host (again) on its disk directory."""
        host.start(self.disks_of(host))

    def hosts(self) -> list[DevHost]:
        root = self.base / "hosts"
        if not root.exists():
            return []
        indexes = sorted(
            int(p.name.split("-")[1]) for p in root.iterdir() if p.name.startswith("dev-")
        )
        return [DevHost(i, self.base, self.offset) for i in indexes]

    def host(self, name: str) -> DevHost:
        for host in self.hosts():
            if host.name == name:
                return host
        raise DevClusterError(f"no devcluster host named {name!r}")

    def up(self, count: int) -> list[DevHost]:
        if not 1 <= count <= 200:
            raise DevClusterError("--hosts must be between 1 and 200")
        hosts = [DevHost(i, self.base, self.offset) for i in range(1, count + 1)]
        self.base.mkdir(parents=True, exist_ok=True)
        (self.base / "offset").write_text(str(self.offset))
        if not self.shared_disks:
            (self.base / OWN_DISKS).touch()
        for host in hosts:
            self.start(host)
        return hosts

    def down(self, purge: bool = False) -> None:
        for host in self.hosts():
            host.kill()
        underlay.remove_bridge(self.offset)
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
