"""Servers forked from a warm parent (see zygote.py), behind Popen's interface."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class Zygote:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.zygote"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._changed = threading.Condition()
        self._pids: list[int] = []
        self.exits: dict[int, int] = {}
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            message = json.loads(line)
            with self._changed:
                if "pid" in message:
                    self._pids.append(message["pid"])
                else:
                    self.exits[message["exit"]] = message["code"]
                self._changed.notify_all()

    def spawn(self, env: dict[str, str], log: Path) -> ForkedProcess:
        assert self.proc.stdin is not None
        with self._changed:
            self.proc.stdin.write(json.dumps({"env": env, "log": str(log)}) + "\n")
            self.proc.stdin.flush()
            if not self._changed.wait_for(lambda: self._pids, timeout=30):
                raise RuntimeError("the zygote did not fork")
            return ForkedProcess(self, self._pids.pop(0))

    def wait_exit(self, pid: int, timeout: float | None) -> int:
        with self._changed:
            if not self._changed.wait_for(lambda: pid in self.exits, timeout=timeout):
                raise subprocess.TimeoutExpired(f"pid {pid}", timeout or 0)
            return self.exits[pid]

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.terminate()
        self.proc.wait(10)


class ForkedProcess:
    """What NubisServer uses of Popen: poll, wait, send_signal, kill, returncode."""

    def __init__(self, zygote: Zygote, pid: int) -> None:
        self.zygote = zygote
        self.pid = pid

    @property
    def returncode(self) -> int | None:
        return self.zygote.exits.get(self.pid)

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        return self.zygote.wait_exit(self.pid, timeout)

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)
