"""The FastAPI application: routers under /api/v1, errors in one shape."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from nubis import __version__
from nubis.api import errors, prometheus, web, web_session
from nubis.api.audit_trail import AuditTrail
from nubis.api.body_limit import BodyLimit
from nubis.api.login_gate import LoginGate
from nubis.api.openstack.app import create_openstack_app
from nubis.api.openstack.links import PREFIX as OPENSTACK_PREFIX
from nubis.api.routers import (
    alarms,
    apikeys,
    audit,
    auth,
    console,
    controllers,
    flavors,
    hosts,
    images,
    instances,
    inventory,
    keypairs,
    monitoring,
    networks,
    ports,
    quotas,
    routing,
    rule_groups,
    security_groups,
    snapshots,
    storage,
    tasks,
    usage,
    users,
    volume_snapshots,
    volumes,
)
from nubis.api.security_headers import SecurityHeaders
from nubis.platform import Platform

API_PREFIX = "/api/v1"
# the native API's routers, each a module with a ``router``
MODULES = (
    auth,
    inventory,
    hosts,
    images,
    flavors,
    instances,
    networks,
    keypairs,
    ports,
    routing,
    rule_groups,
    security_groups,
    storage,
    volumes,
    volume_snapshots,
    snapshots,
    tasks,
    controllers,
    users,
    apikeys,
    quotas,
    audit,
    console,
    monitoring,
    alarms,
    usage,
)


def create_app(
    platform: Platform,
    manage_lifecycle: bool = True,
    on_started: Callable[[], None] | None = None,
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if manage_lifecycle:
            platform.start()
        if on_started is not None:
            on_started()
        try:
            yield
        finally:
            if manage_lifecycle:
                platform.stop()

    app = FastAPI(
        title="Nubis",
        version=__version__,
        description="Private-cloud IaaS manager for libvirt/QEMU hosts",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.platform = platform
    app.state.csrf_key = web_session.derive_key(platform.settings.encryption_key())
    errors.install(app)
    for module in MODULES:
        app.include_router(module.router, prefix=API_PREFIX)
    app.mount(OPENSTACK_PREFIX, create_openstack_app(platform))
    web.install(app)
    app.include_router(prometheus.router)
    app.state.telemetry = prometheus.Telemetry(platform)
    # the last added runs first: a body too large is refused (413) before any part
    # of the app reads it, inside the audit trail (which records the refusal)
    app.add_middleware(BodyLimit, max_bytes=platform.settings.max_body_bytes)
    app.add_middleware(AuditTrail, db=platform.db)
    app.add_middleware(LoginGate, throttle=platform.login_throttle)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(prometheus.RequestTimer, telemetry=app.state.telemetry)
    return app
