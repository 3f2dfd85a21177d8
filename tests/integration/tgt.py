"""An iSCSI target for the tests, from Debian's ``tgt``: one ``tgtd`` on ``address`` with
a control port of its own (so a system tgtd is left alone), one target ``IQN`` with
file-backed LUNs (sparse files) and a CHAP account, every file under one directory.

    target = TgtTarget(tmp / "tgt")
    target.start()
    target.lun_file(1).read_bytes()
    target.stop()
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from tests.integration.server import free_port

IQN = "iqn.2026-12.org.nubis.test:target1"
CHAP_USER, CHAP_SECRET = "nubis-chap", "s3cret-chap-4242"
GIB = 1024**3


class TgtTarget:
    def __init__(
        self, base: Path, address: str = "127.0.0.1", luns: int = 2, lun_bytes: int = GIB
    ) -> None:
        self.base = base
        self.address = address
        self.port = free_port(address)
        self.control = free_port() % 10000  # tgtd's control "port": a socket name suffix
        self.luns, self.lun_bytes = luns, lun_bytes
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def portal(self) -> str:
        return f"{self.address}:{self.port}"

    def lun_file(self, lun: int) -> Path:
        return self.base / f"lun{lun}.img"

    def adm(self, *args: str) -> str:
        argv = ["tgtadm", "-C", str(self.control), "--lld", "iscsi", *args]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: {proc.stderr.strip()}")
        return proc.stdout

    def start(self, timeout: float = 20) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        log = (self.base / "tgtd.log").open("wb")
        self.proc = subprocess.Popen(
            ["tgtd", "-f", "-C", str(self.control), "--iscsi", f"portal={self.portal}"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.adm("--op", "show", "--mode", "target")
                break
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self.adm("--op", "new", "--mode", "target", "--tid", "1", "-T", IQN)
        for lun in range(1, self.luns + 1):
            path = self.lun_file(lun)
            with path.open("wb") as f:
                f.truncate(self.lun_bytes)
            self.adm("--op", "new", "--mode", "logicalunit", "--tid", "1", "--lun", str(lun),
                     "-b", str(path))  # fmt: skip
        self.adm("--op", "bind", "--mode", "target", "--tid", "1", "-I", "ALL")
        self.adm("--op", "new", "--mode", "account", "--user", CHAP_USER,
                 "--password", CHAP_SECRET)  # fmt: skip
        self.adm("--op", "bind", "--mode", "account", "--tid", "1", "--user", CHAP_USER)

    def stop(self) -> None:
        if self.proc is None:
            return
        # tgtd does not leave on SIGTERM while it has targets (it waited out the 20 s
        # below every time); what the LUNs hold is in their files already
        self.proc.kill()
        self.proc.wait()
        self.proc = None
