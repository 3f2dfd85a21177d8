"""Keeps a host's packet filters in force while libvirt rebuilds them.

libvirt's nwfilter puts each NIC's iptables rules in chains the packets reach
through three jumps at the top of ``FORWARD`` (``libvirt-in``: what the guest
sends, ``libvirt-out``: what it receives, ``libvirt-in-post``: accept what passed
both) and one in ``INPUT`` (``libvirt-host-in``). Every time it applies a NIC's
rules (an instance starts, a filter changes) it deletes those jumps and inserts
them again, one ``iptables`` call at a time. In between, every guest of the host
is unfiltered: a packet the security groups drop is accepted by ``FORWARD``'s
policy or by libvirt's network rules, and a TCP connection whose first packet
passed stays open afterwards (its later packets are "established").

The guard makes every path to an accept go through the filters, whichever of
libvirt's jumps exist at that moment:

    FORWARD          nubis-guard -> libvirt-in-post  (before any other rule but
                                                      libvirt's own jumps)
    libvirt-in-post  nubis-guard -> libvirt-out      (first: before its accepts)
    libvirt-out      nubis-guard -> libvirt-in       (first: the sender's rules
                                                      before the receiver's accept)
    INPUT            nubis-guard -> libvirt-host-in

libvirt deletes only its own rules (the comment makes these differ from them) and
appends its per-NIC rules to those chains, so the guard stays first. ``ensure``
puts what is missing or out of place back and changes nothing otherwise.
"""

from __future__ import annotations

import threading

from nubis.agent.overlay import run

COMMENT = "nubis-guard"
MATCH = ["-m", "comment", "--comment", COMMENT]
# chain -> the chain its guard rule jumps to
GUARDS = {
    "libvirt-out": "libvirt-in",
    "libvirt-in-post": "libvirt-out",
    "FORWARD": "libvirt-in-post",
    "INPUT": "libvirt-host-in",
}
# the rules that may come before the guard in a chain: libvirt's own jumps
LIBVIRT_JUMPS = {
    "FORWARD": {"-j libvirt-in", "-j libvirt-out", "-j libvirt-in-post"},
    "INPUT": {"-j libvirt-host-in"},
}
LIBVIRT_CHAINS = ("libvirt-in", "libvirt-out", "libvirt-in-post", "libvirt-host-in")

_lock = threading.Lock()


def _guard_rule(chain: str) -> str:
    return f"-m comment --comment {COMMENT} -j {GUARDS[chain]}"


def _rules(saved: str) -> tuple[set[str], dict[str, list[str]]]:
    """The filter table's chains and each chain's rules (``iptables-save`` lines
    without the ``-A <chain>``)."""
    chains: set[str] = set()
    rules: dict[str, list[str]] = {}
    for line in saved.splitlines():
        if line.startswith(":"):
            chains.add(line[1:].split()[0])
        elif line.startswith("-A "):
            chain, _, rule = line[3:].partition(" ")
            rules.setdefault(chain, []).append(rule.replace('"', ""))
    return chains, rules


def in_place(chain: str, rules: list[str]) -> bool:
    """Whether the chain's guard comes before everything but libvirt's own jumps."""
    allowed = LIBVIRT_JUMPS.get(chain, set())
    for rule in rules:
        if rule == _guard_rule(chain):
            return True
        if rule not in allowed:
            return False
    return False


def ensure() -> list[str]:
    """Put every guard rule in place; the chains whose guard was missing or moved."""
    with _lock:
        chains, rules = _rules(run("iptables-save", "-t", "filter"))
        for chain in LIBVIRT_CHAINS:
            if chain not in chains:
                run("iptables", "-w", "-N", chain)
        fixed = []
        for chain, target in GUARDS.items():
            if in_place(chain, rules.get(chain, [])):
                continue
            for _ in range(rules.get(chain, []).count(_guard_rule(chain))):
                run("iptables", "-w", "-D", chain, *MATCH, "-j", target)
            run("iptables", "-w", "-I", chain, "1", *MATCH, "-j", target)
            fixed.append(chain)
        return fixed
