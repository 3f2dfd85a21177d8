"""Bandwidth limits of NICs (libvirt ``<bandwidth>``, enforced by tc on the host).

A limit is ``{"inbound": {"average", "peak", "burst"}, "outbound": {...}}``:
inbound is traffic to the guest, outbound from it; rates in KiB/s, burst in KiB.
A NIC has its own limits, or its flavor's, or none.

The flavor's limits are what a project pays for: only a system administrator may
set a NIC's limits above them. Anyone else only tightens them (``for_port``): each
direction the flavor limits stays limited, each value at most the flavor's.
"""

from __future__ import annotations

from typing import Any

from nubis.drivers.libvirt.domain_xml import Rate
from nubis.services.core.errors import BadRequest, Forbidden
from nubis.services.core.principal import Principal
from nubis.services.identity import policy

DIRECTIONS = ("inbound", "outbound")
MAX_RATE_KIB_S = 100 * 1024 * 1024  # ~ 800 Gbit/s: anything above is a typo
MAX_BURST_KIB = 4 * 1024 * 1024


def _positive(value: Any, what: str, limit: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
        raise BadRequest(f"{what} must be a whole number between 1 and {limit}")
    return value


def check_bandwidth(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """The limits in their stored shape; BadRequest for anything else. An empty
    value (no direction limited) is None: unlimited."""
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - set(DIRECTIONS):
        raise BadRequest("bandwidth must be {'inbound': {...}, 'outbound': {...}}")
    out: dict[str, Any] = {}
    for direction in DIRECTIONS:
        rate = value.get(direction)
        if rate is None:
            continue
        if not isinstance(rate, dict) or set(rate) - {"average", "peak", "burst"}:
            raise BadRequest(f"bandwidth.{direction} takes average, peak and burst")
        rate = {k: v for k, v in rate.items() if v is not None}
        if "average" not in rate:
            raise BadRequest(f"bandwidth.{direction}.average (KiB/s) is required")
        average = _positive(rate["average"], f"bandwidth.{direction}.average", MAX_RATE_KIB_S)
        clean = {"average": average}
        if "peak" in rate:
            if direction == "outbound":
                raise BadRequest(
                    "bandwidth.outbound.peak is not supported: traffic from the guest is "
                    "policed at an average rate (with a burst)"
                )
            peak = _positive(rate["peak"], f"bandwidth.{direction}.peak", MAX_RATE_KIB_S)
            if peak < average:
                raise BadRequest(f"bandwidth.{direction}.peak must not be below its average")
            clean["peak"] = peak
        if "burst" in rate:
            clean["burst"] = _positive(rate["burst"], f"bandwidth.{direction}.burst", MAX_BURST_KIB)
        out[direction] = clean
    return out or None


def rates(value: dict[str, Any] | None) -> tuple[Rate | None, Rate | None]:
    """(inbound, outbound) of stored limits, for the NIC's domain XML."""

    def rate(direction: str) -> Rate | None:
        found = (value or {}).get(direction)
        if not found:
            return None
        return Rate(found["average"], found.get("peak"), found.get("burst"))

    return rate("inbound"), rate("outbound")


def may_lift(principal: Principal) -> bool:
    """Whether the caller may set limits above the flavor's (the system administrator)."""
    return policy.SYSTEM_ADMIN in principal.roles


def for_port(
    requested: dict[str, Any] | None, flavor: dict[str, Any] | None, lift: bool
) -> dict[str, Any] | None:
    """The limits a NIC gets when ``requested`` (checked) is asked for it: none asked,
    its flavor's. A caller who may not ``lift`` them gets the flavor's limits with the
    requested directions tightened, each value at most the flavor's (Forbidden
    otherwise); a direction the flavor leaves open may be limited at will."""
    limits = check_bandwidth(requested)
    if limits is None:
        return flavor
    if lift or flavor is None:
        return limits
    merged = dict(flavor)
    for direction, rate in limits.items():
        cap = flavor.get(direction)
        if cap is not None:
            ceilings = {
                "average": cap["average"],
                "peak": cap.get("peak", cap["average"]),
                "burst": cap.get("burst", cap["average"]),
            }
            for key, value in rate.items():
                if value > ceilings[key]:
                    raise Forbidden(
                        f"bandwidth.{direction}.{key} {value} is above the flavor's "
                        f"{ceilings[key]}: only a system administrator lifts a flavor's limits"
                    )
        merged[direction] = rate
    return merged
