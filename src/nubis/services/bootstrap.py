"""First-run set-up: default flavors, the admin account, the local host, ``nubis-tiny``."""

from __future__ import annotations

import logging
import os
import secrets
import tempfile
from pathlib import Path

from sqlalchemy import select

from nubis.db.models import Host, Image, User
from nubis.db.session import Database
from nubis.images.tinyimage import build_tiny_image
from nubis.services import auth, flavors, inventory
from nubis.services.errors import ServiceError
from nubis.services.hosts import HostService
from nubis.services.images import ImageService
from nubis.services.scheduler import claims

log = logging.getLogger(__name__)
TINY_IMAGE = "nubis-tiny"


def seed(db: Database, data_dir: Path) -> Path | None:
    """Default flavors, zone and cluster, healed claims; on first run, user ``admin``
    with a random password in a root-only file (returned)."""
    path = data_dir / "admin-password"
    with db.begin() as s:
        flavors.seed_defaults(s)
        inventory.ensure_default(s)
        claims.heal(s)  # the claim counters always agree with the instances at start
        project = auth.ensure_project(s, auth.DEFAULT_PROJECT)
        if s.scalar(select(User).where(User.username == "admin")) is not None:
            return path if path.exists() else None
        password = secrets.token_urlsafe(18)
        auth.create_user(s, "admin", password, project, role="admin", system_role="admin")
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(password + "\n")
    return path


def ensure_local_host(db: Database, hosts: HostService, uri: str) -> None:
    with db.begin() as s:
        host_id = s.scalar(select(Host.id).where(Host.uri == uri))
    if host_id is not None:
        hosts.refresh(db, host_id)
        return
    try:
        hosts.add(db, "local", uri)
        log.info("registered the local libvirtd (%s) as host 'local'", uri)
    except ServiceError as exc:
        log.error("could not register the local host: %s", exc.message)


def ensure_tiny_image(db: Database, images: ImageService) -> None:
    with db.begin() as s:
        if s.scalar(select(Image).where(Image.name == TINY_IMAGE)) is not None:
            return
    log.info("building the %s test image (once)", TINY_IMAGE)
    with tempfile.TemporaryDirectory(prefix="nubis-tiny-", dir=images.store) as tmp:
        path = build_tiny_image(Path(tmp) / "tiny.qcow2")
        with db.begin() as s:
            images.import_file(s, TINY_IMAGE, path, project_id=None)
