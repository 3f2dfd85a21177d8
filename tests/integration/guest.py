"""Typing into a guest's serial console (its shell), as a user at the console would,
and reading the answer back from the console log Nubis serves."""

from __future__ import annotations

import re
import time
import uuid

import libvirt

from tests.integration.server import NubisServer

# the tiny guest prints its uptime on the serial console every 5 s (the migration
# tests follow it): such a line can land in the middle of a command's output
UPTIME_LINE = re.compile(r"^NUBIS-UPTIME \d+\n", re.M)


def guest_run(
    srv: NubisServer, instance_id: str, command: str, uri: str = "qemu:///system", timeout=60
) -> str:
    """Run a shell command in the guest; returns its output (stdout and stderr, and a
    newline added so that output without one still ends its line)."""
    tag = uuid.uuid4().hex[:8]
    # a carriage return ends the line, as the Enter key does on a serial terminal
    line = f"echo BEGIN-{tag}; ( {command} ) 2>&1; echo; echo END-{tag}\r"
    pattern = re.compile(rf"^BEGIN-{tag}\r?\n(.*?)^END-{tag}", re.S | re.M)
    conn = libvirt.open(uri)
    try:
        dom = conn.lookupByUUIDString(instance_id)
        stream = conn.newStream(0)
        dom.openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
        try:
            stream.send(line.encode())
            # the console stays open until the answer is in the log: closing it at
            # once can drop what was typed before the guest read it
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                found = pattern.search(srv.console(instance_id))
                if found:
                    return UPTIME_LINE.sub("", found.group(1).replace("\r", ""))
                time.sleep(0.5)
        finally:
            stream.finish()
    finally:
        conn.close()
    raise AssertionError(f"no answer to {command!r}: {srv.console(instance_id)[-1500:]}")


def uptimes(text: str) -> list[int]:
    """The uptimes (whole seconds) the tiny guest printed, oldest first."""
    return [int(x) for x in re.findall(r"NUBIS-UPTIME (\d+)", text)]


def wait_uptime(srv: NubisServer, iid: str, at_least: int, timeout: float = 90) -> int:
    """Wait until the guest prints an uptime of ``at_least`` seconds; that uptime."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        values = uptimes(srv.console(iid))
        if values and values[-1] >= at_least:
            return values[-1]
        time.sleep(1)
    raise AssertionError(f"guest uptime never reached {at_least}: {srv.console(iid)[-500:]}")
