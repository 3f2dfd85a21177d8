"""Instances: create, list, show, delete, power actions, console log."""

from __future__ import annotations

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse

from nubis.api.deps import PlatformDep, PrincipalDep
from nubis.api.schemas import InstanceAccepted, InstanceIn, InstanceOut, PageOut, TaskAccepted
from nubis.db.models import Host
from nubis.drivers.errors import DriverError
from nubis.services.errors import Unavailable

router = APIRouter(prefix="/instances", tags=["instances"])


@router.get("")
def list_instances(
    platform: PlatformDep,
    principal: PrincipalDep,
    limit: int = 100,
    offset: int = 0,
    marker: str | None = None,
    name: str | None = None,
    status: str | None = None,
) -> PageOut[InstanceOut]:
    with platform.db.begin() as s:
        page = platform.instances.list(s, principal, name, status, limit, offset, marker)
        return PageOut[InstanceOut](
            items=[InstanceOut.model_validate(i) for i in page.items],
            total=page.total,
            limit=page.limit,
            offset=page.offset,
        )


@router.post("", status_code=202)
def create_instance(
    body: InstanceIn, platform: PlatformDep, principal: PrincipalDep
) -> InstanceAccepted:
    with platform.db.begin() as s:
        instance, task = platform.instances.create(
            s, principal, body.name, body.image, body.flavor, body.host
        )
        out = InstanceOut.model_validate(instance).model_dump()
    return InstanceAccepted(**out, task_id=task.id)


@router.get("/{ref}")
def get_instance(ref: str, platform: PlatformDep, principal: PrincipalDep) -> InstanceOut:
    with platform.db.begin() as s:
        return InstanceOut.model_validate(platform.instances.get(s, principal, ref))


@router.delete("/{ref}", status_code=202)
def delete_instance(ref: str, platform: PlatformDep, principal: PrincipalDep) -> InstanceAccepted:
    with platform.db.begin() as s:
        instance, task = platform.instances.delete(s, principal, ref)
        out = InstanceOut.model_validate(instance).model_dump()
    return InstanceAccepted(**out, task_id=task.id)


@router.post("/{ref}/actions/{action}", status_code=202)
def instance_action(
    ref: str, action: str, platform: PlatformDep, principal: PrincipalDep
) -> TaskAccepted:
    with platform.db.begin() as s:
        task = platform.instances.action(s, principal, ref, action)
    return TaskAccepted(task_id=task.id)


@router.get("/{ref}/console-log", response_class=PlainTextResponse)
def console_log(
    ref: str,
    platform: PlatformDep,
    principal: PrincipalDep,
    max_bytes: int = Query(default=65536, ge=1, le=16 * 1024 * 1024),
) -> PlainTextResponse:
    """The serial console output of the instance (the last ``max_bytes``)."""
    with platform.db.begin() as s:
        instance = platform.instances.get(s, principal, ref)
        host = s.get(Host, instance.host_id)
        ref_ = platform.hosts.ref(host) if host else None
        domain_name = instance.domain_name
    if ref_ is None:
        return PlainTextResponse("")
    try:
        data = platform.driver.read_console_log(ref_, domain_name, max_bytes)
    except DriverError as exc:
        raise Unavailable(f"cannot read the console log from the host: {exc}") from exc
    return PlainTextResponse(data.decode("utf-8", errors="replace"))
