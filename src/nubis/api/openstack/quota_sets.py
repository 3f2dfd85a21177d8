"""A project's quotas as Nova (instances, cores, RAM), Cinder (volumes, gigabytes,
snapshots) and Neutron (networks) show them, mapped onto the quota service; the
system administrator sets them (``PUT``). Quotas Nubis does not have read -1."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter
from sqlalchemy.orm import Session

from nubis.api.deps import PlatformDep
from nubis.api.openstack.bodies import unwrap_object
from nubis.api.openstack.caller import As, check_project
from nubis.services.core.errors import BadRequest
from nubis.services.core.principal import Principal
from nubis.services.identity import directory, quotas

router = APIRouter(tags=["openstack quotas"])

# OpenStack quota -> Nubis quota, per service
COMPUTE = {"instances": "instances", "cores": "vcpus", "ram": "memory_mib"}
VOLUME = {"volumes": "volumes", "gigabytes": "volume_gib", "snapshots": "snapshots"}
NETWORK = {"network": "networks", "router": "routers", "floatingip": "floating_ips"}
# what the clients also read, which Nubis does not limit
NETWORK_UNLIMITED = ("subnet", "port", "security_group", "security_group_rule")
CONTROL = {"force", "id", "check_limit"}  # not quotas: how to set them

Reader = Annotated[Principal, As("GET /quotas")]
Setter = Annotated[Principal, As("PUT /projects/{ref}/quotas")]


def _report(session: Session, principal: Principal, project_id: str) -> dict[str, Any]:
    """Your own project's quotas; another project's for the system administrator."""
    check_project(principal, project_id)
    return quotas.report(session, directory.get_project(session, project_id).id)


def _view(mapping: dict[str, str], report: dict[str, Any], detail: bool, used: str) -> dict:
    return {
        name: (
            {"limit": report[ours]["limit"], used: report[ours]["in_use"], "reserved": 0}
            if detail
            else report[ours]["limit"]
        )
        for name, ours in mapping.items()
    }


def _set(
    platform: PlatformDep,
    project_id: str,
    mapping: dict[str, str],
    body: dict[str, Any],
    check_usage: bool,
) -> dict[str, Any]:
    """Set the limits ``body`` names; with ``check_usage`` none may be below what the
    project uses already (-1: no limit). All or nothing."""
    unknown = sorted(set(body) - set(mapping) - CONTROL)
    if unknown:
        raise BadRequest(f"Nubis has no quota {', '.join(unknown)}; it has {', '.join(mapping)}")
    changes = {mapping[k]: v for k, v in body.items() if k in mapping}
    with platform.db.begin() as s:
        project = directory.get_project(s, project_id)
        if check_usage:
            used = quotas.usage(s, project.id, list(changes))
            below = [
                f"{ours} {limit} < {used[ours]} in use"
                for ours, limit in changes.items()
                if isinstance(limit, int) and limit != quotas.UNLIMITED and limit < used[ours]
            ]
            if below:
                raise BadRequest("quota below what is in use: " + "; ".join(below))
        quotas.set_limits(s, project.id, changes)
        return quotas.report(s, project.id)


# -- Nova -------------------------------------------------------------------------------
@router.get("/compute/v2.1/os-quota-sets/{project_id}")
def compute_quotas(project_id: str, platform: PlatformDep, principal: Reader) -> dict:
    with platform.db.read() as s:
        report = _report(s, principal, project_id)
    return {"quota_set": {"id": project_id, **_view(COMPUTE, report, False, "in_use")}}


@router.get("/compute/v2.1/os-quota-sets/{project_id}/detail")
def compute_quotas_detail(project_id: str, platform: PlatformDep, principal: Reader) -> dict:
    with platform.db.read() as s:
        report = _report(s, principal, project_id)
    return {"quota_set": {"id": project_id, **_view(COMPUTE, report, True, "in_use")}}


@router.put("/compute/v2.1/os-quota-sets/{project_id}")
def set_compute_quotas(
    project_id: str, body: dict[str, Any], platform: PlatformDep, _p: Setter
) -> dict:
    wanted = unwrap_object(body, "quota_set")
    report = _set(platform, project_id, COMPUTE, wanted, not wanted.get("force"))
    return {"quota_set": _view(COMPUTE, report, False, "in_use")}


# -- Cinder -----------------------------------------------------------------------------
@router.get("/volume/v3/{project_id}/os-quota-sets/{target}")
def volume_quotas(
    project_id: str,
    target: str,
    platform: PlatformDep,
    principal: Reader,
    usage: bool = False,
) -> dict:
    with platform.db.read() as s:
        _report(s, principal, project_id)
        report = _report(s, principal, target)
    view = _view(VOLUME, report, usage, "in_use")
    return {"quota_set": {"id": target, **view, "backups": 0, "per_volume_gigabytes": -1}}


@router.put("/volume/v3/{project_id}/os-quota-sets/{target}")
def set_volume_quotas(
    project_id: str, target: str, body: dict[str, Any], platform: PlatformDep, _p: Setter
) -> dict:
    report = _set(platform, target, VOLUME, unwrap_object(body, "quota_set"), check_usage=False)
    return {"quota_set": _view(VOLUME, report, False, "in_use")}


# -- Neutron ----------------------------------------------------------------------------
def _network_view(report: dict[str, Any], detail: bool) -> dict[str, Any]:
    view = _view(NETWORK, report, detail, "used")
    for name in NETWORK_UNLIMITED:
        view[name] = {"limit": -1, "used": 0, "reserved": 0} if detail else -1
    return view


@router.get("/network/v2.0/quotas/{project_id}")
def network_quotas(project_id: str, platform: PlatformDep, principal: Reader) -> dict:
    with platform.db.read() as s:
        report = _report(s, principal, project_id)
    return {"quota": _network_view(report, False)}


@router.get("/network/v2.0/quotas/{project_id}/details")
def network_quotas_detail(project_id: str, platform: PlatformDep, principal: Reader) -> dict:
    with platform.db.read() as s:
        report = _report(s, principal, project_id)
    return {"quota": _network_view(report, True)}


@router.put("/network/v2.0/quotas/{project_id}")
def set_network_quotas(
    project_id: str, body: dict[str, Any], platform: PlatformDep, _p: Setter
) -> dict:
    wanted = unwrap_object(body, "quota")
    report = _set(platform, project_id, NETWORK, wanted, bool(wanted.get("check_limit")))
    return {"quota": _network_view(report, False)}


# -- absolute limits (what the project may use, and uses) ----------------------------
def _absolute(report: dict[str, Any], names: dict[str, tuple[str, str]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for ours, (limit_name, used_name) in names.items():
        out[limit_name] = report[ours]["limit"]
        out[used_name] = report[ours]["in_use"]
    return out


COMPUTE_LIMITS = {
    "instances": ("maxTotalInstances", "totalInstancesUsed"),
    "vcpus": ("maxTotalCores", "totalCoresUsed"),
    "memory_mib": ("maxTotalRAMSize", "totalRAMUsed"),
}
VOLUME_LIMITS = {
    "volumes": ("maxTotalVolumes", "totalVolumesUsed"),
    "volume_gib": ("maxTotalVolumeGigabytes", "totalGigabytesUsed"),
    "snapshots": ("maxTotalSnapshots", "totalSnapshotsUsed"),
}


@router.get("/compute/v2.1/limits")
def compute_limits(platform: PlatformDep, principal: Reader) -> dict[str, Any]:
    """The project's quotas and use in Nova's absolute limits (-1: unlimited)."""
    with platform.db.read() as s:
        report = quotas.report(s, principal.project_id)
    absolute = _absolute(report, COMPUTE_LIMITS) | {
        "maxTotalKeypairs": -1,
        "maxServerMeta": 128,
        "maxImageMeta": 0,
        "maxPersonality": 0,
        "maxPersonalitySize": 0,
        "maxServerGroups": -1,
        "maxServerGroupMembers": -1,
        "totalServerGroupsUsed": 0,
        "maxSecurityGroups": -1,
        "maxSecurityGroupRules": -1,
        "totalSecurityGroupsUsed": 0,
        "maxTotalFloatingIps": 0,
        "totalFloatingIpsUsed": 0,
    }
    return {"limits": {"rate": [], "absolute": absolute}}


@router.get("/volume/v3/{project_id}/limits")
def volume_limits(project_id: str, platform: PlatformDep, principal: Reader) -> dict[str, Any]:
    with platform.db.read() as s:
        report = _report(s, principal, project_id)
    absolute = _absolute(report, VOLUME_LIMITS) | {
        "maxTotalBackups": 0,
        "totalBackupsUsed": 0,
        "maxTotalBackupGigabytes": 0,
        "totalBackupGigabytesUsed": 0,
    }
    return {"limits": {"rate": [], "absolute": absolute}}
