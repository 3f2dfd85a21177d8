"""First-run set-up: the controller's id, default flavors, the admin account, the local
host, ``nubis-tiny``, and a default storage pool and network."""

from __future__ import annotations

import logging
import secrets
import tempfile
from pathlib import Path

from sqlalchemy import select

from nubis.db.models import (
    FirstRunStep,
    Host,
    HostStatus,
    Image,
    Network,
    Project,
    StoragePool,
    User,
)
from nubis.db.models.base import new_id
from nubis.db.session import Database
from nubis.files import write_atomically
from nubis.images.tinyimage import build_tiny_image
from nubis.services.compute import flavors
from nubis.services.core.errors import BadRequest, Conflict, ServiceError
from nubis.services.core.principal import Principal
from nubis.services.identity import auth, directory, passwords, policy
from nubis.services.inventory import topology
from nubis.services.inventory.hosts import HostService
from nubis.services.network.ipam import SubnetRequest
from nubis.services.network.networks import NetworkRequest, NetworkService
from nubis.services.storage.images import ImageService
from nubis.services.storage.pools import PoolRequest, PoolService

log = logging.getLogger(__name__)
TINY_IMAGE = "nubis-tiny"


def controller_id(data_dir: Path) -> str:
    """This controller's id: made on its first start and kept in
    ``<data_dir>/controller-id``, so that after a restart it knows the tasks it ran."""
    path = data_dir / "controller-id"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    write_atomically(path, new_id() + "\n", 0o644)
    return path.read_text().strip()


def seed(db: Database, data_dir: Path) -> Path | None:
    """Default flavors, zone and cluster; on first run, user ``admin``
    (system administrator, admin of project ``admin``) and user ``security`` (security
    administrator), each with a random password in a root-only file. Returns the path
    of the admin's file."""
    with db.begin() as s:
        flavors.seed_defaults(s)
        topology.ensure_default(s)
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
    write_atomically(path, password + "\n")
    with db.begin() as s:
        user = directory.create_user(s, username, new, system_role=system_role)
        if system_role == policy.SYSTEM_ADMIN:
            project = auth.ensure_project(s, auth.DEFAULT_PROJECT)
            directory.grant(s, user, project, policy.ADMIN)


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


DEFAULT = "default"
# where the first run looks for a free subnet for the default network
DEFAULT_CIDRS = tuple(f"10.{i}.0.0/24" for i in range(200, 250))


def first_run_defaults(
    db: Database,
    pools: PoolService,
    networks: NetworkService,
    pool_path: Path,
) -> None:
    """Once, on the first run with the local host up: a storage pool ``default`` (a
    directory there) and a NAT network ``default`` of project ``admin``, so a new
    user's first instance has an address and first volume somewhere to go. Removed
    later, they stay removed. A step that fails (the host down, say) is tried again
    at the next start."""
    with db.read() as s:
        if s.get(FirstRunStep, "defaults") is not None:
            return
        host = s.scalar(select(Host).where(Host.name == "local"))
        admin = s.scalar(select(User).where(User.username == "admin"))
        project = s.scalar(select(Project).where(Project.name == auth.DEFAULT_PROJECT))
        if host is None or host.state != HostStatus.UP or admin is None or project is None:
            log.warning("first-run defaults not made yet: the local host is not up")
            return
        has_pool = s.scalar(select(StoragePool.id).where(StoragePool.name == DEFAULT))
        has_network = s.scalar(
            select(Network.id).where(Network.name == DEFAULT, Network.project_id == project.id)
        )
        principal = Principal(
            admin.id, admin.username, project.id, policy.ADMIN, policy.SYSTEM_ADMIN
        )
    try:
        if has_pool is None:
            pool_path.mkdir(parents=True, exist_ok=True)
            pool_path.chmod(0o755)  # QEMU, as its own user, enters it
            pools.create(PoolRequest(DEFAULT, "dir", str(pool_path), host="local"))
        if has_network is None:
            _default_network(networks, principal)
    except ServiceError as exc:
        log.error("first-run defaults: %s (tried again at the next start)", exc.message)
        return
    with db.begin() as s:
        s.merge(FirstRunStep(step="defaults"))
    log.info("made storage pool %r and network %r (first run)", DEFAULT, DEFAULT)


def _default_network(networks: NetworkService, principal: Principal) -> None:
    """A NAT network on the first of ``DEFAULT_CIDRS`` no other network of the host
    takes (a subnet in use elsewhere on the host is refused by its libvirt)."""
    errors = []
    for cidr in DEFAULT_CIDRS:
        try:
            networks.create(principal, NetworkRequest(DEFAULT, "nat", [SubnetRequest(cidr)]))
            return
        except (BadRequest, Conflict) as exc:
            errors.append(f"{cidr}: {exc.message}")
            if "already exists" in exc.message:
                raise
    raise Conflict("no free subnet for the default network: " + "; ".join(errors[-3:]))
