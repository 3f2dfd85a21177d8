"""The OpenStack-compatible API as its own application, mounted under ``/openstack``
with its own error shapes and the compute microversion middleware."""

from __future__ import annotations

from fastapi import FastAPI

from nubis.api.openstack import (
    compute,
    compute_admin,
    errors,
    flavors,
    identity,
    images,
    network_writes,
    networks,
    quota_sets,
    routing,
    security_groups,
    server_groups,
    server_volumes,
    servers,
    volume_snapshots,
    volumes,
)
from nubis.platform import Platform

MODULES = (
    identity,
    compute,
    compute_admin,
    servers,
    server_groups,
    flavors,
    images,
    networks,
    network_writes,
    routing,
    security_groups,
    volumes,
    volume_snapshots,
    server_volumes,
    quota_sets,
)


def create_openstack_app(platform: Platform) -> FastAPI:
    app = FastAPI(
        title="Nubis OpenStack-compatible API",
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.platform = platform
    errors.install(app)
    for module in MODULES:
        app.include_router(module.router)
    app.add_middleware(compute.Microversions)
    return app
