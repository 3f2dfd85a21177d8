"""Fence agents: power a failed host off (out of band) before its VMs run elsewhere.

Each agent turns the host off and confirms it is off, or raises ``FenceError``;
``none`` fences nothing (the lock manager's leases are then the only guard).
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path
from typing import Any, Protocol

from nubis import blocking
from nubis.devcluster.hosts import DevCluster, DevClusterError
from nubis.drivers.errors import DriverError


class FenceError(DriverError):
    pass


class FenceAgent(Protocol):
    method: str

    def check(self, params: dict[str, Any]) -> None:
        """Raise ValueError when the parameters cannot work."""

    def fence(self, params: dict[str, Any]) -> str:
        """Power the host off; return what was done. Raises FenceError."""


class Ipmi:
    """``ipmitool -I lanplus``: chassis power off, then wait for power status off."""

    method = "ipmi"

    def check(self, params: dict[str, Any]) -> None:
        for key in ("address", "username", "password"):
            if not params.get(key):
                raise ValueError(f"ipmi fencing needs {key}")

    def _run(self, params: dict[str, Any], *args: str) -> str:
        blocking.check("ipmitool")
        cmd = ["ipmitool", "-I", "lanplus", "-H", params["address"], "-U", params["username"]]
        cmd += ["-E", *args]  # the password goes through the environment, not argv
        try:
            proc = subprocess.run(
                cmd,
                env={"IPMI_PASSWORD": params["password"], "PATH": "/usr/bin:/bin"},
                capture_output=True,
                text=True,
                timeout=30,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise FenceError(f"ipmitool failed: {exc}") from exc
        if proc.returncode != 0:
            raise FenceError(f"ipmitool {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    def fence(self, params: dict[str, Any]) -> str:
        self._run(params, "chassis", "power", "off")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if re.search(r"power is off", self._run(params, "chassis", "power", "status"), re.I):
                return f"powered off through IPMI at {params['address']}"
            time.sleep(2)
        raise FenceError("the BMC never reported the power off")


class DevclusterFence:
    """The devcluster's power switch: kill every process of the simulated host."""

    method = "devcluster"

    def check(self, params: dict[str, Any]) -> None:
        if not re.fullmatch(r"dev-\d+", str(params.get("host", ""))):
            raise ValueError("devcluster fencing needs host (dev-<n>)")
        if not params.get("base"):
            raise ValueError("devcluster fencing needs base (the devcluster directory)")

    def fence(self, params: dict[str, Any]) -> str:
        try:
            host = DevCluster(Path(params["base"])).host(params["host"])
        except DevClusterError as exc:
            raise FenceError(str(exc)) from exc
        host.kill()
        return f"killed every process of {host.name}"


class NoFence:
    method = "none"

    def check(self, params: dict[str, Any]) -> None:
        pass

    def fence(self, params: dict[str, Any]) -> str:
        raise FenceError("no fence agent configured")


AGENTS: dict[str, FenceAgent] = {a.method: a for a in (NoFence(), Ipmi(), DevclusterFence())}
