"""Quotas: a project's limits and what it uses."""

from __future__ import annotations

from fastapi import APIRouter

from nubis.api.deps import PlatformDep, PrincipalDep
from nubis.api.identity_schemas import QuotaOut
from nubis.services.identity import directory, quotas

router = APIRouter(tags=["quotas"])


@router.get("/quotas")
def my_quotas(platform: PlatformDep, principal: PrincipalDep) -> QuotaOut:
    """Limits and usage of the caller's project."""
    with platform.db.read() as s:
        return QuotaOut(
            project_id=principal.project_id, quotas=quotas.report(s, principal.project_id)
        )


@router.get("/projects/{ref}/quotas")
def project_quotas(ref: str, platform: PlatformDep, _p: PrincipalDep) -> QuotaOut:
    with platform.db.read() as s:
        project = directory.get_project(s, ref)
        return QuotaOut(project_id=project.id, quotas=quotas.report(s, project.id))


@router.put("/projects/{ref}/quotas")
def set_quotas(ref: str, body: dict[str, int], platform: PlatformDep, _p: PrincipalDep) -> QuotaOut:
    """Set limits, e.g. ``{"instances": 10, "vcpus": 20}`` (``-1``: unlimited)."""
    with platform.db.begin() as s:
        project = directory.get_project(s, ref)
        quotas.set_limits(s, project.id, body)
        return QuotaOut(project_id=project.id, quotas=quotas.report(s, project.id))
