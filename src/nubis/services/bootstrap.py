"""First-run set-up: default flavors, the admin account, the local host, ``nubis-tiny``."""

from __future__ import annotations

import logging
import os
import secrets
import tempfile
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from nubis.db.models import Host, Image, User
from nubis.db.session import Database
from nubis.images.tinyimage import build_tiny_image
from nubis.services import auth, flavors, identity, inventory, policy
from nubis.services.errors import ServiceError
from nubis.services.hosts import HostService
from nubis.services.images import ImageService

log = logging.getLogger(__name__)
TINY_IMAGE = "nubis-tiny"


def seed(db: Database, data_dir: Path) -> Path | None:
    """Default flavors, zone and cluster; on first run, user ``admin``
    (system administrator, admin of project ``admin``) and user ``security`` (security
    administrator), each with a random password in a root-only file. Returns the path
    of the admin's file."""
    with db.begin() as s:
        flavors.seed_defaults(s)
        inventory.ensure_default(s)
        project = auth.ensure_project(s, auth.DEFAULT_PROJECT)
        admin = _first_user(s, data_dir, "admin", policy.SYSTEM_ADMIN)
        if admin is not None:
            identity.grant(s, admin, project, policy.ADMIN)
        _first_user(s, data_dir, "security", policy.SECURITY_ADMIN)
    path = data_dir / "admin-password"
    return path if path.exists() else None


def _first_user(s: Session, data_dir: Path, username: str, system_role: str) -> User | None:
    """Create ``username`` with a random password written to ``<username>-password``
    unless it exists already (then None)."""
    if s.scalar(select(User).where(User.username == username)) is not None:
        return None
    password = secrets.token_urlsafe(18)
    user = identity.create_user(s, username, password, system_role=system_role)
    path = data_dir / f"{username}-password"
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(password + "\n")
    return user


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
