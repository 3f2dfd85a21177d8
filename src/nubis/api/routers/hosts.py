"""Hosts: libvirt servers Nubis manages."""

from __future__ import annotations

from fastapi import APIRouter, Response
from sqlalchemy import select

from nubis.api.deps import PageDep, PlatformDep, PrincipalDep
from nubis.api.schemas import (
    AgentIn,
    CapacityOut,
    EvacuateIn,
    FencingIn,
    HostIn,
    HostOut,
    PageOut,
    TaskAccepted,
)
from nubis.db.models import Host
from nubis.services.compute import host_drain
from nubis.services.core.errors import NotFoundError
from nubis.services.core.lookup import get_by_id_or_name, paginate
from nubis.services.inventory import topology

router = APIRouter(prefix="/hosts", tags=["hosts"])


@router.get("")
def list_hosts(
    platform: PlatformDep,
    _p: PrincipalDep,
    pages: PageDep,
    name: str | None = None,
    state: str | None = None,
) -> PageOut[HostOut]:
    query = select(Host)
    if name:
        query = query.where(Host.name == name)
    if state:
        query = query.where(Host.state == state)
    with platform.db.read() as s:
        page = paginate(s, query, Host, pages)
        return PageOut.of(page, HostOut)


@router.post("", status_code=201)
def add_host(body: HostIn, platform: PlatformDep, _p: PrincipalDep) -> HostOut:
    host = platform.hosts.add(
        platform.db,
        body.name,
        body.uri,
        body.username,
        body.password,
        body.virt_type,
        body.cluster,
    )
    platform.pools.ensure_on_host(host.id)  # the pools of its cluster, on it too
    platform.networks.ensure_on_host(host.id)  # and its networks
    platform.sync.share_now()  # a controller watches it from now on
    return HostOut.model_validate(host)


@router.get("/{ref}")
def get_host(ref: str, platform: PlatformDep, _p: PrincipalDep) -> HostOut:
    with platform.db.read() as s:
        return HostOut.model_validate(get_by_id_or_name(s, Host, ref, "host"))


@router.get("/{ref}/capacity")
def host_capacity(ref: str, platform: PlatformDep, _p: PrincipalDep) -> CapacityOut:
    with platform.db.read() as s:
        return CapacityOut.model_validate(topology.host_capacity(s, ref))


@router.post("/{ref}/actions/maintenance", status_code=202)
def enter_maintenance(ref: str, platform: PlatformDep, _p: PrincipalDep) -> TaskAccepted:
    """No new placement on the host; its instances are migrated away (running ones
    live); the host's ``maintenance`` becomes ``active`` once it is empty."""
    with platform.db.begin() as s:
        task = host_drain.enter_maintenance(platform.instances, s, ref)
    return TaskAccepted(task_id=task.id)


@router.post("/{ref}/actions/exit-maintenance")
def exit_maintenance(ref: str, platform: PlatformDep, _p: PrincipalDep) -> HostOut:
    with platform.db.begin() as s:
        return HostOut.model_validate(host_drain.exit_maintenance(s, ref))


@router.post("/{ref}/actions/evacuate", status_code=202)
def evacuate(ref: str, body: EvacuateIn, platform: PlatformDep, _p: PrincipalDep) -> TaskAccepted:
    """Restart the instances of a host that is down on other hosts of its cluster."""
    with platform.db.begin() as s:
        task = host_drain.evacuate(platform.instances, s, ref, body.confirm_host_down)
    return TaskAccepted(task_id=task.id)


@router.put("/{ref}/fencing")
def set_fencing(ref: str, body: FencingIn, platform: PlatformDep, _p: PrincipalDep) -> HostOut:
    """How the host is powered off before its HA instances restart elsewhere; the
    parameters are kept encrypted and never shown."""
    params = body.model_dump(exclude={"method"}, exclude_none=True)
    with platform.db.begin() as s:
        return HostOut.model_validate(platform.hosts.set_fencing(s, ref, body.method, params))


@router.put("/{ref}/agent")
def set_agent(ref: str, body: AgentIn, platform: PlatformDep, _p: PrincipalDep) -> HostOut:
    """Where the host's network agent listens (``python -m nubis.agent``) and its token,
    kept encrypted and never shown; overlay networks need one on every host."""
    with platform.db.begin() as s:
        host = platform.hosts.set_agent(s, ref, body.url, body.token)
        return HostOut.model_validate(host)


@router.post("/{ref}/actions/{action}")
def host_action(ref: str, action: str, platform: PlatformDep, _p: PrincipalDep) -> HostOut:
    """``enable`` or ``disable`` (a disabled host keeps its VMs, takes no new one)."""
    if action not in ("enable", "disable"):
        raise NotFoundError(
            f"unknown host action {action!r}; actions are enable, disable, maintenance, "
            "exit-maintenance, evacuate"
        )
    with platform.db.begin() as s:
        return HostOut.model_validate(platform.hosts.set_enabled(s, ref, action == "enable"))


@router.delete("/{ref}", status_code=204)
def delete_host(ref: str, platform: PlatformDep, _p: PrincipalDep) -> Response:
    with platform.db.begin() as s:
        platform.hosts.remove(s, ref)
    return Response(status_code=204)
