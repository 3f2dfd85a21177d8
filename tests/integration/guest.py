"""Typing into a guest's serial console (its shell), as a user at the console would,
and reading the answer back from the console log Nubis serves."""

from __future__ import annotations

import re
import time
import uuid

import libvirt

from tests.integration.server import NubisServer

# the tiny guest prints its uptime on the serial console every 5 s (the migration
# tests follow it): such a line can land in the middle of a command's output, even
# right after output that has not ended its line yet ("GOLDEN-MARKNUBIS-UPTIME 8")
UPTIME_LINE = re.compile(r"NUBIS-UPTIME \d+\n")
# the kernel writes its messages on the same console ("[   41.2] clocksource: ...",
# a disk's "[vdb] 2097152 512-byte logical blocks" printed late): one landed in a
# command's output in CI; no command of the tests prints such a line itself
KERNEL_LINE = re.compile(r"\[ *\d+\.\d+\] [^\n]*\n")


# the guest's UART takes 16 bytes at a time: a line sent faster than a busy (TCG)
# guest drains it loses characters, so it is typed in small pieces
TYPE_CHUNK = 8
TYPE_PAUSE = 0.02
# a line whose start never shows (lost whole while the guest was busy) is typed again
RETYPE_AFTER = 15.0


def guest_run(
    srv: NubisServer, instance_id: str, command: str, uri: str = "qemu:///system", timeout=60
) -> str:
    """Run a shell command in the guest; returns its output (stdout and stderr, and a
    newline added so that output without one still ends its line)."""
    tag = uuid.uuid4().hex[:8]
    # a carriage return ends the line, as the Enter key does on a serial terminal;
    # the tag is printed in two pieces, so the echo of the typed line never matches
    line = f"echo BEGIN-{tag[:4]}''{tag[4:]}; ( {command} ) 2>&1; echo; echo END-{tag}\r"
    begin = re.compile(rf"^BEGIN-{tag}\r?$", re.M)
    pattern = re.compile(rf"^BEGIN-{tag}\r?\n(.*?)^END-{tag}", re.S | re.M)
    conn = libvirt.open(uri)
    try:
        dom = conn.lookupByUUIDString(instance_id)
        stream = conn.newStream(0)
        dom.openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
        try:
            _type(stream, line)
            typed_at = time.monotonic()
            # the console stays open until the answer is in the log: closing it at
            # once can drop what was typed before the guest read it
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                log = srv.console(instance_id)
                found = pattern.search(log)
                if found:
                    answer = found.group(1).replace("\r", "")
                    return KERNEL_LINE.sub("", UPTIME_LINE.sub("", answer))
                if not begin.search(log) and time.monotonic() - typed_at > RETYPE_AFTER:
                    _type(stream, "\r" + line)  # never started: typed again
                    typed_at = time.monotonic()
                time.sleep(0.5)
        finally:
            stream.finish()
    finally:
        conn.close()
    raise AssertionError(f"no answer to {command!r}: {srv.console(instance_id)[-1500:]}")


def _type(stream: libvirt.virStream, line: str) -> None:
    data = line.encode()
    for i in range(0, len(data), TYPE_CHUNK):
        stream.send(data[i : i + TYPE_CHUNK])
        time.sleep(TYPE_PAUSE)


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


def dhcp_address(server, iid: str, nic: str = "eth0", timeout: float = 60) -> str:
    """The address the guest says DHCP gave its NIC (on its serial console)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.findall(rf"NUBIS-IP {nic} (\S+)", server.console(iid))
        if found:
            return found[-1]
        time.sleep(0.5)
    raise AssertionError(f"no DHCP address on {nic}: {server.console(iid)[-1500:]}")
