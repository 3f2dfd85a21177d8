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
from nubis.services import auth, flavors, identity, inventory, passwords, policy
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
        auth.ensure_project(s, auth.DEFAULT_PROJECT)
    _first_user(db, data_dir, "admin", policy.SYSTEM_ADMIN)
    _first_user(db, data_dir, "security", policy.SECURITY_ADMIN)
    path = data_dir / "admin-password"
    return path if path.exists() else None


def _first_user(db: Database, data_dir: Path, username: str, system_role: str) -> None:
    """Create ``username`` with a random password written to ``<username>-password``
    (before the user is committed: a user whose password file is missing never
    exists) unless it exists already. A system administrator is admin of the
    default project."""
    with db.read() as s:
        if s.scalar(select(User.id).where(User.username == username)) is not None:
            return
    password = secrets.token_urlsafe(18)
    new = passwords.prepare(db, username, password)
    path = data_dir / f"{username}-password"
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(password + "\n")
    with db.begin() as s:
        user = identity.create_user(s, username, new, system_role=system_role)
        if system_role == policy.SYSTEM_ADMIN:
            project = auth.ensure_project(s, auth.DEFAULT_PROJECT)
            identity.grant(s, user, project, policy.ADMIN)


def ensure_local_host(db: Database, hosts: HostService, uri: str) -> None:
    with db.read() as s:
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
    with db.read() as s:
        if s.scalar(select(Image).where(Image.name == TINY_IMAGE)) is not None:
            return
    log.info("building the %s test image (once)", TINY_IMAGE)
    with tempfile.TemporaryDirectory(prefix="nubis-tiny-", dir=images.store) as tmp:
        path = build_tiny_image(Path(tmp) / "tiny.qcow2")
        images.import_file(db, TINY_IMAGE, path, project_id=None)
