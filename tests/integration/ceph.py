"""A one-node Ceph cluster for the tests, from Debian's packages: one monitor, one
manager (it reports the space libvirt shows as a pool's capacity) and one BlueStore
OSD on a file, on one address of this machine (msgr v1; 127.0.0.1, or a
devcluster's underlay bridge so that its hosts reach it too), every file under one
directory, every daemon a child process that ``stop`` kills.

    cluster = CephCluster(tmp / "ceph")
    cluster.start()
    cluster.ceph("osd", "pool", "ls")
    cluster.stop()

The cluster has an RBD pool ``POOL`` and a cephx user ``USER`` allowed to use it
only (``cluster.user_key``), as an operator gives a cloud platform.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path

from tests.integration.server import free_port

POOL = "nubis"
USER = "nubis"  # client.nubis
OSD_BYTES = 3 * 1024**3


class CephCluster:
    def __init__(self, base: Path, address: str = "127.0.0.1") -> None:
        self.base = base
        self.address = address
        self.port = free_port(address)
        self.fsid = str(uuid.uuid4())
        self.conf = base / "ceph.conf"
        self.admin_keyring = base / "admin.keyring"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.user_key = ""

    @property
    def monitor(self) -> str:
        return f"{self.address}:{self.port}"

    # -- commands ---------------------------------------------------------------------
    def _run(self, *argv: str, timeout: float = 60) -> str:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: {proc.stderr.strip() or proc.stdout.strip()}")
        return proc.stdout

    def ceph(self, *args: str, timeout: float = 60) -> str:
        return self._run(
            "ceph", "-c", str(self.conf), "--connect-timeout", "20", *args, timeout=timeout
        )

    def rbd(self, *args: str, timeout: float = 60) -> str:
        return self._run("rbd", "-c", str(self.conf), *args, timeout=timeout)

    def images(self) -> list[str]:
        return sorted(json.loads(self.rbd("ls", "--format", "json", POOL) or "[]"))

    # -- life -------------------------------------------------------------------------
    def _write_conf(self) -> None:
        b = self.base
        self.conf.write_text(
            f"""[global]
fsid = {self.fsid}
mon host = v1:{self.monitor}
public addr = {self.address}
mon initial members = a
ms bind msgr2 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
mon allow pool size one = true
mon allow pool delete = true
osd crush chooseleaf type = 0
run dir = {b}/run
admin socket = {b}/run/$name.asok
log file = {b}/log/$name.log
mon warn on pool no redundancy = false
[mon]
mon data = {b}/mon/$name
[mon.a]
keyring = {b}/mon/ceph-a/keyring
[mgr]
mgr data = {b}/mgr/ceph-$id
keyring = {b}/mgr/ceph-$id/keyring
[osd]
osd data = {b}/osd/$id
keyring = {b}/osd/$id/keyring
osd objectstore = bluestore
bluestore block create = true
bluestore block size = {OSD_BYTES}
osd memory target = 939524096
bluestore cache autotune = false
bluestore cache size = 67108864
osd op num shards = 1
osd op num threads per shard = 2
[client.admin]
keyring = {self.admin_keyring}
"""
        )

    def _spawn(self, *argv: str) -> None:
        log = (self.base / "log" / f"{argv[0]}.{len(self.procs)}.out").open("wb")
        self.procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT))

    def start(self, timeout: float = 120) -> None:
        b = self.base
        for sub in ("run", "log", "mon/ceph-a", "mgr/ceph-x", "osd/0"):
            (b / sub).mkdir(parents=True, exist_ok=True)
        self._write_conf()
        conf = ("-c", str(self.conf))
        root = ("--setuser", "root", "--setgroup", "root")
        mon_keyring = b / "mon.keyring"
        self._run("ceph-authtool", "--create-keyring", str(mon_keyring), "--gen-key",
                  "-n", "mon.", "--cap", "mon", "allow *")  # fmt: skip
        self._run("ceph-authtool", "--create-keyring", str(self.admin_keyring), "--gen-key",
                  "-n", "client.admin", "--cap", "mon", "allow *", "--cap", "osd", "allow *",
                  "--cap", "mgr", "allow *")  # fmt: skip
        self._run("ceph-authtool", str(mon_keyring), "--import-keyring", str(self.admin_keyring))
        monmap = b / "monmap"
        self._run("monmaptool", "--create", "--fsid", self.fsid, "--addv", "a",
                  f"[v1:{self.monitor}]", str(monmap))  # fmt: skip
        self._run("ceph-mon", *conf, "--mkfs", "-i", "a", "--monmap", str(monmap),
                  "--keyring", str(mon_keyring), *root)  # fmt: skip
        self._spawn("ceph-mon", "-f", *conf, "-i", "a", *root)
        mgr_key = self.ceph("auth", "get-or-create", "mgr.x", "mon", "allow profile mgr",
                            "osd", "allow *")  # fmt: skip
        (b / "mgr" / "ceph-x" / "keyring").write_text(mgr_key)
        self._spawn("ceph-mgr", "-f", *conf, "-i", "x", *root)
        osd_uuid = str(uuid.uuid4())
        osd_id = self.ceph("osd", "new", osd_uuid).strip()
        self._run("ceph-osd", *conf, "-i", osd_id, "--mkfs", "--mkkey", "--osd-uuid", osd_uuid,
                  "--no-mon-config",
                  *root, timeout=120)  # fmt: skip
        self.ceph("auth", "add", f"osd.{osd_id}", "osd", "allow *", "mon", "allow profile osd",
                  "-i", str(b / "osd" / osd_id / "keyring"))  # fmt: skip
        self._spawn("ceph-osd", "-f", *conf, "-i", osd_id, *root)
        self.ceph("osd", "pool", "create", POOL, "8")
        self.ceph("osd", "pool", "application", "enable", POOL, "rbd")
        self.user_key = self.ceph(
            "auth", "get-or-create-key", f"client.{USER}",
            "mon", "profile rbd", "osd", f"profile rbd pool={POOL}",
        ).strip()  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:  # the pool serves I/O, and the manager reports the OSD's space
            try:
                self.rbd("create", "--size", "1M", f"{POOL}/ready", timeout=20)
                self.rbd("rm", f"{POOL}/ready", timeout=20)
                stats = json.loads(self.ceph("df", "--format", "json", timeout=20))["stats"]
                if stats["total_bytes"] > 0:
                    return
            except (RuntimeError, subprocess.TimeoutExpired):
                if time.monotonic() > deadline:
                    raise
            if time.monotonic() > deadline:
                raise RuntimeError("the Ceph manager reports no space")
            time.sleep(1)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()
