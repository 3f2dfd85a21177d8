"""Controllers: the ``nubis serve`` processes sharing the database (system administrators)."""

from __future__ import annotations

from fastapi import APIRouter

from nubis.api.deps import PlatformDep, PrincipalDep
from nubis.tasks.engine import ControllerView

router = APIRouter(prefix="/controllers", tags=["controllers"])


@router.get("")
def list_controllers(platform: PlatformDep, _p: PrincipalDep) -> list[ControllerView]:
    """Each controller with its heartbeat, whether it is alive (a heartbeat within the
    takeover time) and how many tasks it runs; ``this`` marks the one answering."""
    return platform.engine.controllers()
