"""Counters of hosts and their domains, read in bulk: one ``getAllDomainStats`` call
per host for every running domain (not one call per domain), one node CPU and one
node memory call. Counters only: rates are computed above, from two readings."""

from __future__ import annotations

from dataclasses import dataclass

import libvirt

from nubis.drivers.libvirt.base import DriverBase, HostRef
from nubis.drivers.libvirt.compute import DISK_POOL

DOMAIN_PREFIX = "nubis-"
STATS = (
    libvirt.VIR_DOMAIN_STATS_STATE
    | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL
    | libvirt.VIR_DOMAIN_STATS_BALLOON
    | libvirt.VIR_DOMAIN_STATS_INTERFACE
    | libvirt.VIR_DOMAIN_STATS_BLOCK
)


@dataclass(frozen=True)
class DomainCounters:
    """One running domain at one moment; byte, request and packet counts since it started."""

    uuid: str
    cpu_time_ns: int
    memory_kib: int  # assigned to the guest (balloon)
    rss_kib: int  # host memory the guest's QEMU process holds
    rd_bytes: int
    wr_bytes: int
    rd_reqs: int
    wr_reqs: int
    rx_bytes: int
    tx_bytes: int
    rx_pkts: int
    tx_pkts: int


@dataclass(frozen=True)
class HostCounters:
    cpu_busy_ns: int  # all CPUs: user + kernel (+ iowait counts as idle)
    cpu_total_ns: int
    memory_total_kib: int
    memory_available_kib: int  # free + buffers + cached
    storage_used_bytes: int | None  # the host's disk pool, when it exists
    storage_total_bytes: int | None


def _sum(stats: dict[str, int], kind: str, field: str) -> int:
    """``field`` summed over every disk (``kind`` block) or NIC (``net``)."""
    count = int(stats.get(f"{kind}.count", 0))
    return sum(int(stats.get(f"{kind}.{i}.{field}", 0)) for i in range(count))


def domain_counters(uuid: str, stats: dict[str, int]) -> DomainCounters:
    return DomainCounters(
        uuid=uuid,
        cpu_time_ns=int(stats.get("cpu.time", 0)),
        memory_kib=int(stats.get("balloon.current", 0)),
        rss_kib=int(stats.get("balloon.rss", 0)),
        rd_bytes=_sum(stats, "block", "rd.bytes"),
        wr_bytes=_sum(stats, "block", "wr.bytes"),
        rd_reqs=_sum(stats, "block", "rd.reqs"),
        wr_reqs=_sum(stats, "block", "wr.reqs"),
        rx_bytes=_sum(stats, "net", "rx.bytes"),
        tx_bytes=_sum(stats, "net", "tx.bytes"),
        rx_pkts=_sum(stats, "net", "rx.pkts"),
        tx_pkts=_sum(stats, "net", "tx.pkts"),
    )


class StatsDriver(DriverBase):
    def domains(self, host: HostRef) -> list[DomainCounters]:
        """Every running Nubis domain of the host, in one call."""

        def read(conn: libvirt.virConnect) -> list[DomainCounters]:
            flags = libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE
            return [
                domain_counters(dom.UUIDString(), stats)
                for dom, stats in conn.getAllDomainStats(STATS, flags)
                if dom.name().startswith(DOMAIN_PREFIX)
            ]

        return self._call(host, read, "read domain statistics")

    def host(self, host: HostRef) -> HostCounters:
        def read(conn: libvirt.virConnect) -> HostCounters:
            cpu = conn.getCPUStats(libvirt.VIR_NODE_CPU_STATS_ALL_CPUS)
            mem = conn.getMemoryStats(libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS)
            busy = int(cpu.get("kernel", 0)) + int(cpu.get("user", 0))
            idle = int(cpu.get("idle", 0)) + int(cpu.get("iowait", 0))
            available = sum(int(mem.get(k, 0)) for k in ("free", "buffers", "cached"))
            used = total = None
            if DISK_POOL in conn.listStoragePools():
                _state, total, used, _free = conn.storagePoolLookupByName(DISK_POOL).info()
            return HostCounters(busy, busy + idle, int(mem.get("total", 0)), available, used, total)

        return self._call(host, read, "read host statistics")
