"""Nova servers: create, list (brief and detail, with filters and marker paging),
show, delete, addresses and the power actions, each mapped onto the instance service."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request, Response
from pydantic import AliasChoices, BaseModel, ConfigDict, Field
from sqlalchemy import select

from nubis.api.deps import PlatformDep
from nubis.api.openstack import links, server_view
from nubis.api.openstack.bodies import one_action, unwrap
from nubis.api.openstack.caller import As
from nubis.api.openstack.errors import NotSupported
from nubis.db.models import Instance
from nubis.services.compute import migration, resize, templates
from nubis.services.compute.cloudinit import GuestRequest
from nubis.services.compute.instances import InstanceRequest
from nubis.services.core.errors import BadRequest, Conflict, NotFoundError
from nubis.services.core.lookup import paginate
from nubis.services.core.principal import Principal
from nubis.services.identity import policy
from nubis.services.network.ports import NicRequest

router = APIRouter(prefix="/compute/v2.1/servers", tags=["openstack compute"])


class NetworkIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    uuid: str | None = None
    port: str | None = None
    fixed_ip: str | None = None


class NamedIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str


class ServerIn(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)
    name: str = Field(max_length=255)
    imageRef: str = ""  # noqa: N815 - Nova's field names
    flavorRef: str  # noqa: N815
    networks: list[NetworkIn] | str | None = None
    key_name: str | None = None
    user_data: str | None = Field(default=None, max_length=65535 * 4 // 3 + 4)
    metadata: dict[str, str] = {}
    security_groups: list[NamedIn] | None = None
    availability_zone: str | None = None
    config_drive: bool | str | None = None
    min_count: int = 1
    max_count: int = 1
    block_device_mapping_v2: list[dict[str, Any]] | None = None
    personality: list[dict[str, Any]] | None = None


class ServerCreateIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    server: ServerIn
    scheduler_hints: dict[str, Any] | None = Field(
        default=None,
        validation_alias=AliasChoices("os:scheduler_hints", "OS-SCH-HNT:scheduler_hints"),
    )


def _last_segment(ref: str) -> str:
    """``flavorRef``/``imageRef`` may be an id or a link to one."""
    return ref.rstrip("/").rsplit("/", 1)[-1]


def _user_data(encoded: str | None) -> str | None:
    if not encoded:
        return None
    try:
        return base64.b64decode(encoded, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise BadRequest("user_data must be base64 of UTF-8 text") from exc


def _nics(server: ServerIn) -> list[NicRequest] | None:
    """The NICs asked for: "auto" (or nothing) is the project's default network, as
    Nova allocates one; "none" is no NIC."""
    groups = [g.name for g in server.security_groups] if server.security_groups else None
    if server.networks is None or isinstance(server.networks, str):
        if server.networks not in (None, "auto", "none"):
            raise BadRequest('networks must be a list, "auto" or "none"')
        return [] if server.networks == "none" else None
    nics = []
    for net in server.networks:
        if net.port:
            raise NotSupported(
                "booting onto an existing port is not supported; give the network (uuid)"
            )
        if not net.uuid:
            raise BadRequest("each entry of networks needs a uuid (the network)")
        nics.append(NicRequest(net.uuid, net.fixed_ip, groups))
    return nics


def _check_supported(server: ServerIn) -> None:
    if server.min_count != 1 or server.max_count != 1:
        raise NotSupported("Nubis creates one server per request (min_count = max_count = 1)")
    image = _last_segment(server.imageRef) if server.imageRef else None
    for bdm in server.block_device_mapping_v2 or []:
        # the image as the local root disk is what imageRef says already
        local_image = (
            bdm.get("source_type") == "image"
            and bdm.get("destination_type", "local") == "local"
            and bdm.get("uuid") == image
        )
        if not local_image:
            raise NotSupported("booting from or attaching volumes at create is not supported")
    if not image:
        raise NotSupported("booting from a volume is not supported: give imageRef")
    if server.personality:
        raise NotSupported("personality files are not supported: use user_data")


@router.post("", status_code=202)
def create_server(
    body: ServerCreateIn,
    request: Request,
    response: Response,
    platform: PlatformDep,
    principal: Annotated[Principal, As("POST /instances")],
) -> dict[str, Any]:
    server = body.server
    _check_supported(server)
    hints = body.scheduler_hints or {}
    unknown = sorted(set(hints) - {"group"})
    if unknown:
        raise NotSupported(f"scheduler hints {', '.join(unknown)} are not supported (only group)")
    group = hints.get("group")
    if group is not None and not isinstance(group, str):
        raise BadRequest("os:scheduler_hints.group must be one server group id")
    configdrive = str(server.config_drive).lower() in ("true", "1")
    guest = GuestRequest(
        None,
        server.key_name,
        _user_data(server.user_data),
        "configdrive" if configdrive else "nocloud",
    )
    with platform.db.begin() as s:
        wanted = InstanceRequest(
            name=server.name,
            image=_last_segment(server.imageRef),
            flavor=_last_segment(server.flavorRef),
            rule_group=group,
            nics=_nics(server),
            guest=guest,
            properties=server.metadata,
        )
        instance, _task = platform.instances.create(s, principal, wanted)
        out = server_view.brief(request, instance)
    response.headers["Location"] = out["links"][0]["href"]
    return {
        "server": {
            **out,
            "OS-DCF:diskConfig": "MANUAL",
            "security_groups": [{"name": g.name} for g in server.security_groups or []],
        }
    }


@dataclass
class ServerFilters:
    name: str | None = None  # a part of the name (Nova: a regular expression)
    status: str | None = None
    all_tenants: str | None = None
    project_id: str | None = None


def _list(
    request: Request,
    platform: PlatformDep,
    principal: Principal,
    detail: bool,
    filters: ServerFilters,
    paging: links.Paging,
) -> dict[str, Any]:
    query = select(Instance)
    if filters.project_id and principal.all_projects:
        query = query.where(Instance.project_id == filters.project_id)
    elif not (principal.all_projects and links.truthy(filters.all_tenants)):
        query = query.where(Instance.project_id == principal.project_id)
    if filters.name:
        query = query.where(Instance.name.contains(filters.name, autoescape=True))
    if filters.status:
        wanted = server_view.STATUS_FILTER.get(filters.status.lower())
        if wanted is None:
            return {"servers": []}  # Nova: an unknown status matches nothing
        query = query.where(Instance.status == wanted)
    with platform.db.begin() as s:
        page = paginate(s, query, Instance, paging.page())
        if detail:
            related = server_view.Related(s, page.items)
            views = [
                server_view.detail(request, related, i, principal.all_projects) for i in page.items
            ]
        else:
            views = [server_view.brief(request, i) for i in page.items]
    return {"servers": views, **links.page_links(request, "servers", page.items, paging)}


Lister = Annotated[Principal, As("GET /instances")]
Filters = Annotated[ServerFilters, Depends()]


@router.get("")
def list_servers(
    request: Request,
    platform: PlatformDep,
    principal: Lister,
    filters: Filters,
    paging: links.PagingDep,
) -> dict[str, Any]:
    return _list(request, platform, principal, False, filters, paging)


@router.get("/detail")
def list_servers_detail(
    request: Request,
    platform: PlatformDep,
    principal: Lister,
    filters: Filters,
    paging: links.PagingDep,
) -> dict[str, Any]:
    return _list(request, platform, principal, True, filters, paging)


def find_server(platform: PlatformDep, principal: Principal, server_id: str) -> Instance:
    """A server by id only, as Nova finds them (names are resolved by the clients)."""
    with platform.db.begin() as s:
        instance = s.scalar(select(Instance).filter_by(id=server_id, **principal.scope()))
        if instance is None:
            raise NotFoundError(f"Instance {server_id} could not be found.")
        s.expunge(instance)
        return instance


@router.get("/{server_id}")
def show_server(
    server_id: str,
    request: Request,
    platform: PlatformDep,
    principal: Annotated[Principal, As("GET /instances/{ref}")],
) -> dict[str, Any]:
    instance = find_server(platform, principal, server_id)
    with platform.db.read() as s:
        related = server_view.Related(s, [instance])
        return {"server": server_view.detail(request, related, instance, principal.all_projects)}


@router.get("/{server_id}/ips")
def server_ips(
    server_id: str,
    platform: PlatformDep,
    principal: Annotated[Principal, As("GET /instances/{ref}")],
) -> dict[str, Any]:
    instance = find_server(platform, principal, server_id)
    with platform.db.read() as s:
        return {"addresses": server_view.addresses(server_view.Related(s, [instance]), instance)}


@router.delete("/{server_id}", status_code=204)
def delete_server(
    server_id: str,
    platform: PlatformDep,
    principal: Annotated[Principal, As("DELETE /instances/{ref}")],
) -> Response:
    instance = find_server(platform, principal, server_id)
    with platform.db.begin() as s:
        platform.instances.delete(s, principal, instance.id)
    return Response(status_code=204)


# Nova action -> Nubis instance action
POWER_ACTIONS = {
    "os-start": "start",
    "os-stop": "stop",
    "pause": "pause",
    "unpause": "resume",
    "suspend": "suspend",
    "resume": "resume",
}
# Nubis resumes paused and suspended instances alike; Nova names the two apart
RESUMES_FROM = {"unpause": "paused", "resume": "suspended"}


# Nova action -> the native route it is (its policy entry)
RESIZE_ACTIONS = {
    "resize": "POST /instances/{ref}/actions/resize",
    "confirmResize": "POST /instances/{ref}/actions/confirm-resize",
    "revertResize": "POST /instances/{ref}/actions/revert-resize",
}


def _resize(
    platform: PlatformDep, principal: Principal, instance: Instance, name: str, args: Any
) -> None:
    """``resize`` to ``flavorRef`` (in place, on the server's host), then
    ``confirmResize`` or ``revertResize``."""
    policy.authorize(principal.roles, RESIZE_ACTIONS[name])
    with platform.db.begin() as s:
        if name == "resize":
            flavor = args.get("flavorRef") if isinstance(args, dict) else None
            if not isinstance(flavor, str) or not flavor:
                raise BadRequest("resize needs a flavorRef")
            resize.request_resize(platform.instances, s, principal, instance.id, flavor)
        elif name == "confirmResize":
            resize.request_confirm(platform.instances, s, principal, instance.id)
        else:
            resize.request_revert(platform.instances, s, principal, instance.id)


def _migrate(platform: PlatformDep, principal: Principal, instance: Instance, args: Any) -> None:
    """``os-migrateLive`` (a running server) and ``migrate`` (a stopped one: cold), to
    ``host`` or where the scheduler puts it; system administrators only, as natively."""
    policy.authorize(principal.roles, "POST /instances/{ref}/actions/migrate")
    host = args.get("host") if isinstance(args, dict) else None
    settings = platform.settings
    with platform.db.begin() as s:
        row = s.get(Instance, instance.id)
        assert row is not None
        migration.request_migration(
            platform.instances,
            s,
            principal,
            row,
            host,
            settings.migration_max_downtime_ms,
            settings.migration_max_bandwidth_mib_s,
        )


def _create_image(
    platform: PlatformDep, principal: Principal, instance: Instance, args: Any
) -> str:
    """An image of a stopped server's root disk (a Nubis template); its id at once."""
    policy.authorize(principal.roles, "POST /instances/{ref}/actions/create-template")
    name = args.get("name") if isinstance(args, dict) else None
    if not isinstance(name, str):
        raise BadRequest("createImage needs a name")
    if isinstance(args, dict) and args.get("metadata"):
        raise NotSupported("image properties are not kept: leave metadata out")
    with platform.db.begin() as s:
        task = templates.request_template(
            platform.instances, platform.images, s, principal, instance.id, name
        )
        return str(task.params["image_id"])


def _console_url(request: Request, platform: PlatformDep, principal: Principal, iid: str) -> str:
    """The web console's page for the server (sign-in there, then the VNC console)."""
    with platform.db.begin() as s:
        instance = platform.instances.get(s, principal, iid)
        if instance.status != "running":
            raise Conflict(f"instance {instance.name!r} is {instance.status}, not running")
    return f"{request.url.scheme}://{request.url.netloc}/instances/{iid}/console"


@router.post("/{server_id}/action", status_code=202)
def server_action(
    server_id: str,
    request: Request,
    response: Response,
    platform: PlatformDep,
    principal: Annotated[Principal, As("POST /instances/{ref}/actions/{action}")],
    body: Annotated[dict[str, Any], Body()],
) -> dict[str, Any] | None:
    """One action per request, named by the body's only key (``{"os-stop": null}``)."""
    name, args = one_action(body)
    instance = find_server(platform, principal, server_id)
    if name == "reboot":
        kind = args.get("type") if isinstance(args, dict) else None
        if kind not in ("SOFT", "HARD"):
            raise BadRequest("reboot.type must be SOFT or HARD")
        action = "reboot" if kind == "SOFT" else "hard-reboot"
    elif name in POWER_ACTIONS:
        action = POWER_ACTIONS[name]
        needs = RESUMES_FROM.get(name)
        if needs and instance.status != needs:
            raise Conflict(
                f"cannot {name} server {instance.name!r} while it is {instance.status}: "
                f"{name} is for a {needs} server"
            )
    elif name in RESIZE_ACTIONS:
        _resize(platform, principal, instance, name, args)
        return None
    elif name in ("os-migrateLive", "migrate"):
        _migrate(platform, principal, instance, args)
        return None
    elif name == "createImage":
        image_id = _create_image(platform, principal, instance, args)
        image_url = f"{links.service_url(request, 'image')}/v2/images/{image_id}"
        response.headers["Location"] = image_url
        return None
    elif name == "os-getVNCConsole":
        url = _console_url(request, platform, principal, instance.id)
        response.status_code = 200
        return {"console": {"type": "novnc", "url": url}}
    else:
        raise NotSupported(f"the server action {name!r} is not supported by Nubis")
    with platform.db.begin() as s:
        platform.instances.action(s, principal, instance.id, action)
    return None


# -- metadata (Nubis instance properties) -------------------------------------------
Writer = Annotated[Principal, As("PUT /instances/{ref}/properties")]
Reader = Annotated[Principal, As("GET /instances/{ref}")]


def _properties(platform: PlatformDep, principal: Principal, server_id: str) -> dict[str, str]:
    return dict(find_server(platform, principal, server_id).properties or {})


def _change(
    platform: PlatformDep,
    principal: Principal,
    server_id: str,
    changes: object,
    remove: tuple[str, ...] = (),
    replace: bool = False,
) -> dict[str, str]:
    instance = find_server(platform, principal, server_id)
    with platform.db.begin() as s:
        changed = platform.instances.change_properties(
            s, principal, instance.id, changes, remove, replace
        )
        return dict(changed.properties or {})


@router.get("/{server_id}/metadata")
def show_metadata(server_id: str, platform: PlatformDep, principal: Reader) -> dict[str, Any]:
    return {"metadata": _properties(platform, principal, server_id)}


@router.put("/{server_id}/metadata")
def replace_metadata(
    server_id: str,
    platform: PlatformDep,
    principal: Writer,
    body: Annotated[dict[str, Any], Body()],
) -> dict[str, Any]:
    new = unwrap(body, "metadata")
    return {"metadata": _change(platform, principal, server_id, new, replace=True)}


@router.post("/{server_id}/metadata")
def merge_metadata(
    server_id: str,
    platform: PlatformDep,
    principal: Writer,
    body: Annotated[dict[str, Any], Body()],
) -> dict[str, Any]:
    return {"metadata": _change(platform, principal, server_id, unwrap(body, "metadata"))}


@router.get("/{server_id}/metadata/{key}")
def show_metadata_item(
    server_id: str, key: str, platform: PlatformDep, principal: Reader
) -> dict[str, Any]:
    properties = _properties(platform, principal, server_id)
    if key not in properties:
        raise NotFoundError(f"Metadata item was not found: {key}")
    return {"meta": {key: properties[key]}}


@router.put("/{server_id}/metadata/{key}")
def set_metadata_item(
    server_id: str,
    key: str,
    platform: PlatformDep,
    principal: Writer,
    body: Annotated[dict[str, Any], Body()],
) -> dict[str, Any]:
    meta = unwrap(body, "meta")
    if not isinstance(meta, dict) or set(meta) != {key}:
        raise BadRequest("the body is {'meta': {key: value}} with the key of the URL")
    changed = _change(platform, principal, server_id, meta)
    return {"meta": {key: changed[key]}}


@router.delete("/{server_id}/metadata/{key}", status_code=204)
def delete_metadata_item(
    server_id: str, key: str, platform: PlatformDep, principal: Writer
) -> Response:
    _change(platform, principal, server_id, {}, remove=(key,))
    return Response(status_code=204)
