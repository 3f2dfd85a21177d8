"""Ports (NICs): their security groups and bandwidth limits, changed live."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from nubis.api.deps import PlatformDep, PrincipalDep
from nubis.api.network_schemas import PortOut
from nubis.api.schemas import BandwidthIn, bandwidth_dict
from nubis.db.models import Port
from nubis.services.compute import nics
from nubis.services.network.ports import port_groups

router = APIRouter(prefix="/ports", tags=["networks"])


class PortGroupsIn(BaseModel):
    security_groups: list[str] = Field(description="groups by id or name (replaces the set)")


def port_out(session: Session, port: Port) -> PortOut:
    out = PortOut.model_validate(port)
    out.security_groups = sorted(port_groups(session, [port.id]))
    return out


@router.get("/{port_id}")
def get_port(port_id: str, platform: PlatformDep, principal: PrincipalDep) -> PortOut:
    with platform.db.read() as s:
        return port_out(s, nics.get_port(s, principal, port_id))


@router.put("/{port_id}/security-groups")
def set_port_groups(
    port_id: str, body: PortGroupsIn, platform: PlatformDep, principal: PrincipalDep
) -> PortOut:
    """Applied at once to the running NIC (no restart, no unplug)."""
    platform.live_ports.set_groups(principal, port_id, body.security_groups)
    with platform.db.begin() as s:
        return port_out(s, nics.get_port(s, principal, port_id))


@router.put("/{port_id}/bandwidth")
def set_port_bandwidth(
    port_id: str, body: BandwidthIn, platform: PlatformDep, principal: PrincipalDep
) -> PortOut:
    """New traffic limits (an empty body: unlimited), applied live to a running NIC."""
    platform.live_ports.set_bandwidth(principal, port_id, bandwidth_dict(body))
    with platform.db.begin() as s:
        return port_out(s, nics.get_port(s, principal, port_id))
