"""The web console: server-rendered pages (Jinja2 + htmx) on the API's own data,
the API's policy and the API's tokens. Front-end libraries come from the npm
registry at setup time (``package.json`` and its lock file, installed by
``setup.sh`` into ``node_modules`` here)."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from nubis.api.web import instance_pages, login, monitoring_pages, pages
from nubis.api.web.render import HERE, LoginRequired, login_redirect

log = logging.getLogger(__name__)
NODE_MODULES = HERE / "node_modules"
# URL under /static/vendor -> the npm package's folder that is served
VENDOR = {"htmx": "htmx.org/dist", "novnc": "@novnc/novnc", "uplot": "uplot/dist"}


def install(app: FastAPI) -> None:
    for module in (login, pages, instance_pages, monitoring_pages):
        app.include_router(module.router)
    app.add_exception_handler(LoginRequired, login_redirect)
    for name, folder in VENDOR.items():
        path = NODE_MODULES / folder
        if not path.is_dir():
            log.warning("web console asset %s is missing: run ./setup.sh (npm ci)", path)
        app.mount(f"/static/vendor/{name}", StaticFiles(directory=path, check_dir=False))
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
