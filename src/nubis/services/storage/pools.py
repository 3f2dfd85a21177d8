"""Storage pools (primary storage): registered per host or per cluster, defined as
libvirt pools on every host that uses them, their capacity refreshed from libvirt.

Creating a pool is all-or-nothing: the row is written as ``creating``, the pool is
defined on each host, and if any host refuses, it is removed from the others and
the row deleted. A pool a dead process left ``creating`` is undone at start-up.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nubis.db.models import (
    Cluster,
    Flavor,
    Host,
    HostStatus,
    PoolState,
    StoragePool,
    Volume,
    new_id,
    utcnow,
)
from nubis.db.session import Database
from nubis.drivers import rbd_images
from nubis.drivers.errors import DriverError
from nubis.drivers.libvirt.base import HostRef
from nubis.drivers.libvirt.volumes import PoolSpec, VolumeDriver
from nubis.services.core.errors import BadRequest, Conflict, NotFoundError, Unavailable
from nubis.services.core.lookup import get_by_id_or_name, validate_name
from nubis.services.identity.secrets import SecretBox
from nubis.services.inventory.hosts import HostService, call_each
from nubis.tasks.in_flight import InFlight

log = logging.getLogger(__name__)
KIND = "pool"  # the lease of an operation in flight: pool:<id>
BUSY = "another operation on the storage pool is under way; try again"

# kind -> scope it is registered in
KINDS = {
    "dir": "host",
    "lvm": "host",
    "shared": "cluster",
    "nfs": "cluster",
    "rbd": "cluster",
    "iscsi": "cluster",
}
VG_RE = re.compile(r"^[A-Za-z0-9+_.][A-Za-z0-9+_.-]{0,126}$")
TAG_RE = re.compile(r"^[A-Za-z0-9._-]{1,32}$")
CEPH_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")  # a Ceph pool, a cephx user
MONITOR_RE = re.compile(r"^(?P<address>[A-Za-z0-9][A-Za-z0-9.-]{0,252})(:(?P<port>\d{1,5}))?$")
CEPH_PORT = 6789  # the monitors' msgr v1 port
ISCSI_PORT = 3260
IQN_RE = re.compile(r"^iqn\.\d{4}-\d{2}\.[a-z0-9][a-z0-9.-]*(:[A-Za-z0-9._:-]{1,190})?$")
LUN_NAME = re.compile(r"^unit:0:0:\d+$")  # libvirt's iscsi-direct volume names
CHAP_RE = re.compile(r"^[\x21-\x7e]{1,255}$")  # printable, no spaces
MAX_MONITORS = 9
REFRESH_SECONDS = 60  # how old a pool's capacity may grow before it is read again
CEPHX_KEY_BYTES = 28  # a cephx key: type, creation time, length, 16 bytes of secret


@dataclass(frozen=True)
class PoolRequest:
    name: str
    kind: str
    path: str
    host: str | None = None
    cluster: str | None = None
    nfs_server: str | None = None
    nfs_export: str | None = None
    tags: list[str] = field(default_factory=list)
    monitors: list[str] = field(default_factory=list)  # rbd: address[:port] of each
    auth_user: str | None = None  # rbd: the cephx user
    auth_key: str | None = field(default=None, repr=False)  # rbd: its key (base64);
    # iscsi: the CHAP secret
    portal: str | None = None  # iscsi: address[:port] of the target
    initiator: str | None = None  # iscsi: the IQN the hosts log in as


def check_tags(tags: list[str]) -> list[str]:
    for tag in tags:
        if not isinstance(tag, str) or not TAG_RE.match(tag):
            raise BadRequest(f"tag {tag!r}: 1-32 letters, digits, '.', '_' or '-'")
    return list(tags)


def monitor_addresses(
    monitors: list[str], default_port: int = CEPH_PORT, what: str = "monitor"
) -> list[tuple[str, int]]:
    """(address, port) of each monitor (or portal) given as ``address[:port]``; 400
    otherwise."""
    if not isinstance(monitors, list) or not 1 <= len(monitors) <= MAX_MONITORS:
        raise BadRequest(f"an rbd pool needs monitors: 1 to {MAX_MONITORS} address[:port]")
    out = []
    for monitor in monitors:
        found = MONITOR_RE.match(monitor) if isinstance(monitor, str) else None
        port = int(found["port"] or default_port) if found else 0
        if found is None or not 1 <= port <= 65535:
            raise BadRequest(f"{what} {monitor!r}: give address[:port]")
        out.append((found["address"], port))
    return out


def portal_address(portal: str | None) -> tuple[str, int]:
    if not portal:
        raise BadRequest("an iscsi pool needs portal, the target's address[:port]")
    return monitor_addresses([portal], ISCSI_PORT, "portal")[0]


def default_initiator(pool_id: str) -> str:
    return f"iqn.2026-12.org.nubis:pool-{pool_id[:8]}"


def check_cephx_key(key: str | None) -> bytes:
    """The key's bytes, as libvirt's secret holds them; 400 when it is no cephx key."""
    try:
        raw = base64.b64decode(key or "", validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != CEPHX_KEY_BYTES:
        raise BadRequest("auth_key must be the cephx user's key (40 base64 characters)")
    return raw


def spec_of(pool: StoragePool, box: SecretBox) -> PoolSpec:
    if pool.kind == "iscsi":
        chap = box.decrypt(pool.auth_key)["key"] if pool.auth_key else None
        return PoolSpec(
            pool.libvirt_name,
            "iscsi-direct",
            pool.path,
            source_name=pool.path,
            monitors=(portal_address(pool.portal),),
            auth_user=pool.auth_user,
            secret_uuid=pool.id if chap else None,
            secret=chap.encode() if chap else None,
            initiator=pool.initiator,
        )
    if pool.kind == "rbd":
        key = box.decrypt(pool.auth_key)["key"] if pool.auth_key else ""
        return PoolSpec(
            pool.libvirt_name,
            "rbd",
            pool.path,
            source_name=pool.path,
            monitors=tuple(monitor_addresses(list(pool.monitors or []))),
            auth_user=pool.auth_user,
            secret_uuid=pool.id,
            secret=base64.b64decode(key),
        )
    if pool.kind == "lvm":
        return PoolSpec(pool.libvirt_name, "logical", f"/dev/{pool.path}", source_name=pool.path)
    if pool.kind == "nfs":
        return PoolSpec(
            pool.libvirt_name,
            "netfs",
            pool.path,
            source_host=pool.nfs_server,
            source_dir=pool.nfs_export,
        )
    return PoolSpec(pool.libvirt_name, "dir", pool.path)


def _check_not_root_pool(session: Session, pool: StoragePool) -> None:
    """409 while flavors or clusters make root disks in the pool."""
    for model, what in ((Flavor, "flavor"), (Cluster, "cluster")):
        names = session.scalars(select(model.name).where(model.root_pool_id == pool.id)).all()
        if names:
            raise Conflict(
                f"storage pool {pool.name!r} is the root pool of {what} "
                f"{', '.join(sorted(names))}: change that first"
            )


def hosts_of(session: Session, pool: StoragePool) -> list[Host]:
    """The hosts that use the pool: its host, or every host of its cluster."""
    if pool.host_id is not None:
        return [h for h in [session.get(Host, pool.host_id)] if h is not None]
    return list(session.scalars(select(Host).where(Host.cluster_id == pool.cluster_id)).all())


def reaches(pool: StoragePool, host: Host) -> bool:
    """Whether the pool's volumes can be attached to instances on ``host``."""
    if pool.host_id is not None:
        return pool.host_id == host.id
    return pool.cluster_id is not None and pool.cluster_id == host.cluster_id


def _validate(session: Session, req: PoolRequest) -> tuple[Host | None, Cluster | None, str]:
    """The pool's host or cluster, and its path as libvirt will keep it (a directory
    without doubled or trailing slashes)."""
    validate_name(req.name, "storage pool")
    if req.kind not in KINDS:
        raise BadRequest(f"kind must be one of {', '.join(KINDS)}")
    if session.scalar(select(StoragePool).where(StoragePool.name == req.name)) is not None:
        raise Conflict(f"a storage pool named {req.name!r} already exists")
    check_tags(req.tags)
    host = cluster = None
    if KINDS[req.kind] == "host":
        if not req.host or req.cluster:
            raise BadRequest(f"a {req.kind} pool belongs to one host: give host, not cluster")
        host = get_by_id_or_name(session, Host, req.host, "host")
    else:
        if not req.cluster or req.host:
            raise BadRequest(f"a {req.kind} pool belongs to a cluster: give cluster, not host")
        cluster = get_by_id_or_name(session, Cluster, req.cluster, "cluster")
    if req.kind == "lvm":
        if not VG_RE.match(req.path):
            raise BadRequest("an lvm pool's path is the name of an existing volume group")
    elif req.kind == "rbd":
        if not CEPH_NAME_RE.match(req.path):
            raise BadRequest("an rbd pool's path is the name of the Ceph pool")
        monitor_addresses(req.monitors)
        if not req.auth_user or not CEPH_NAME_RE.match(req.auth_user.removeprefix("client.")):
            raise BadRequest("an rbd pool needs auth_user, the cephx user (e.g. nubis)")
        check_cephx_key(req.auth_key)
    elif req.kind == "iscsi":
        if not IQN_RE.match(req.path):
            raise BadRequest("an iscsi pool's path is the target's IQN (iqn.YYYY-MM.domain:name)")
        portal_address(req.portal)
        if req.initiator is not None and not IQN_RE.match(req.initiator):
            raise BadRequest("initiator must be an IQN (iqn.YYYY-MM.domain:name)")
        if bool(req.auth_user) != bool(req.auth_key):
            raise BadRequest("CHAP needs both auth_user and auth_key (or neither)")
        for value in (req.auth_user, req.auth_key):
            if value and not CHAP_RE.match(value):
                raise BadRequest("auth_user and auth_key: 1-255 printable characters, no spaces")
    elif not req.path.startswith("/") or ".." in req.path.split("/") or len(req.path) > 255:
        raise BadRequest("path must be an absolute directory path (no '..')")
    if req.kind not in ("rbd", "iscsi") and (req.auth_user or req.auth_key):
        raise BadRequest("auth_user and auth_key are for rbd and iscsi pools")
    if req.kind != "rbd" and req.monitors:
        raise BadRequest("monitors are for rbd pools (an iscsi pool has a portal)")
    if req.kind != "iscsi" and (req.portal or req.initiator):
        raise BadRequest("portal and initiator are for iscsi pools")
    path = req.path if req.kind in ("lvm", "rbd", "iscsi") else os.path.normpath(req.path)

    if req.kind == "nfs" and not (req.nfs_server and req.nfs_export):
        raise BadRequest("an nfs pool needs nfs_server and nfs_export")
    same_place = select(StoragePool).where(StoragePool.path == path)
    if host is not None:
        same_place = same_place.where(StoragePool.host_id == host.id)
    elif cluster is not None:
        same_place = same_place.where(StoragePool.cluster_id == cluster.id)
    if session.scalar(same_place) is not None:
        raise Conflict(f"another pool already uses {req.path!r} there")
    return host, cluster, path


class PoolService:
    def __init__(
        self, db: Database, driver: VolumeDriver, hosts: HostService, in_flight: InFlight
    ) -> None:
        self.db = db
        self.driver = driver
        self.hosts = hosts
        self.in_flight = in_flight

    def create(self, req: PoolRequest) -> StoragePool:
        pool_id = new_id()
        with self.in_flight.running(KIND, pool_id, Conflict(BUSY)):
            return self._create(pool_id, req)

    def _create(self, pool_id: str, req: PoolRequest) -> StoragePool:
        with self.db.begin() as s:
            host, cluster, path = _validate(s, req)
            rbd = req.kind == "rbd"
            user = req.auth_user.removeprefix("client.") if rbd and req.auth_user else req.auth_user
            pool = StoragePool(
                id=pool_id,
                name=req.name,
                kind=req.kind,
                path=path,
                nfs_server=req.nfs_server,
                nfs_export=req.nfs_export,
                monitors=list(req.monitors) if rbd else None,
                auth_user=user or None,
                auth_key=self.hosts.box.encrypt({"key": req.auth_key}) if req.auth_key else None,
                portal=req.portal,
                initiator=req.initiator,
                host_id=host.id if host else None,
                cluster_id=cluster.id if cluster else None,
                tags=list(req.tags),
                state=PoolState.CREATING,
            )
            s.add(pool)
            s.flush()
            if pool.kind == "iscsi" and not pool.initiator:
                pool.initiator = default_initiator(pool.id)
            targets = [
                (h.name, self.hosts.ref(h)) for h in hosts_of(s, pool) if h.state == HostStatus.UP
            ]
            spec = spec_of(pool, self.hosts.box)
        if not targets:
            self._undo(pool_id, [])
            raise Conflict("no host of that scope is up: the pool cannot be defined anywhere")
        attempted: list[HostRef] = []  # a host that refused may hold a partial definition
        try:
            for name, ref in targets:
                attempted.append(ref)
                try:
                    usage = self.driver.ensure_pool(ref, spec)
                except DriverError as exc:
                    raise BadRequest(f"host {name!r} cannot use the pool: {exc}") from exc
        except BaseException:
            self._undo(pool_id, attempted)
            raise
        with self.db.begin() as s:
            pool = s.get(StoragePool, pool_id)
            assert pool is not None
            pool.state = PoolState.ACTIVE
            self._apply_usage(pool, usage.capacity, usage.allocation, usage.available)
            return pool

    def _undo(self, pool_id: str, refs: list[HostRef]) -> None:
        with self.db.read() as s:
            pool = s.get(StoragePool, pool_id)
            if pool is None:
                return
            name = pool.libvirt_name
        # a host that cannot be reached: the reconciliation removes the pool later
        for failure in call_each(refs, lambda ref: self.driver.remove_pool(ref, name)):
            log.warning("could not remove pool %s from %s", name, failure)
        with self.db.begin() as s:
            pool = s.get(StoragePool, pool_id)
            if pool is not None:
                s.delete(pool)

    def undo_interrupted(self) -> None:
        """Pools a dead process left half-created are removed everywhere; those it
        left being deleted are deleted (at start-up, and in the housekeeping rounds
        for controllers that died: never a pool another controller is working on)."""
        in_flight = StoragePool.state.in_((PoolState.CREATING, PoolState.DELETING))
        with self.db.read() as s:
            found = list(s.scalars(select(StoragePool.id).where(in_flight)))
        if not found:
            return
        with self.in_flight.orphans(KIND, found) as orphaned:
            with self.db.read() as s:
                stale = [
                    (p.id, [self.hosts.ref(h) for h in hosts_of(s, p)])
                    for p in s.scalars(
                        select(StoragePool).where(in_flight, StoragePool.id.in_(orphaned))
                    )
                ]
            for pool_id, refs in stale:
                log.warning("undoing the interrupted operation on storage pool %s", pool_id)
                self._undo(pool_id, refs)

    def delete(self, ref: str) -> None:
        """Remove the pool from its hosts, then its row; if a host refuses, nothing
        changes. It is ``deleting`` meanwhile (no volume is made in it)."""
        with self.db.read() as s:
            pool_id = get_by_id_or_name(s, StoragePool, ref, "storage pool").id
        with self.in_flight.running(KIND, pool_id, Conflict(BUSY)):
            self._delete(pool_id)

    def _delete(self, ref: str) -> None:
        with self.db.begin() as s:
            pool = get_by_id_or_name(s, StoragePool, ref, "storage pool")
            _check_not_root_pool(s, pool)
            count = s.scalar(select(func.count()).where(Volume.pool_id == pool.id)) or 0
            if count:
                raise Conflict(
                    f"storage pool {pool.name!r} still holds {count} volume(s); delete them first"
                )
            if pool.state not in (PoolState.ACTIVE, PoolState.ERROR):
                raise Conflict(f"storage pool {pool.name!r} is {pool.state}")
            before, pool.state = pool.state, PoolState.DELETING
            pool_id, name, kind = pool.id, pool.libvirt_name, pool.kind
            refs = [self.hosts.ref(h) for h in hosts_of(s, pool)]
            up = [self.hosts.ref(h) for h in hosts_of(s, pool) if h.state == HostStatus.UP]
        failed = self._remove_bases(up, name, pool_id) if kind == "rbd" else []
        if not failed:
            failed = call_each(refs, lambda ref: self.driver.remove_pool(ref, name))
        with self.db.begin() as s:
            pool = s.get(StoragePool, pool_id)
            if pool is None:
                return
            if failed:
                pool.state = before
            else:
                s.delete(pool)
        if failed:
            raise Unavailable(f"could not remove the pool from a host: {'; '.join(failed)}")

    def _remove_bases(self, refs: list[HostRef], name: str, pool_id: str) -> list[str]:
        """The images' copies (bases of RBD clones, see ``rbd_bases``) out of an RBD
        pool that holds no volume; the errors, if no host could do it."""
        errors = []
        for ref in refs:
            try:
                for vol in self.driver.list_volumes(ref, name):
                    if vol.startswith(rbd_images.base_prefix(pool_id)):
                        self.driver.delete_volume(ref, name, vol, with_snapshots=True)
                return []
            except DriverError as exc:
                errors.append(f"{ref.uri}: {exc}")
        return errors

    def luns(self, ref: str) -> list[tuple[int, int, str | None]]:
        """(LUN, bytes, the volume that is it) of an iscsi pool, read from the target
        through a host of the pool."""
        with self.db.read() as s:
            pool = get_by_id_or_name(s, StoragePool, ref, "storage pool")
            if pool.kind != "iscsi":
                raise BadRequest(f"storage pool {pool.name!r} is {pool.kind}: LUNs are iscsi's")
            host, name = one_host(s, pool, self.hosts), pool.libvirt_name
            adopted = dict(
                s.execute(
                    select(Volume.lun, Volume.id).where(
                        Volume.pool_id == pool.id, Volume.lun.is_not(None)
                    )
                ).all()
            )
        try:
            found = self.driver.list_volumes(host, name)
        except DriverError as exc:
            raise Unavailable(f"the target did not answer: {exc}") from exc
        luns = sorted(  # a target's LUN 0 may be its controller, holding nothing
            (int(n.rsplit(":", 1)[1]), size)
            for n, size in found.items()
            if LUN_NAME.match(n) and size > 0
        )
        return [(lun, size, adopted.get(lun)) for lun, size in luns]

    def refresh(self, ref: str) -> StoragePool:
        """Read capacity and allocation from libvirt (through the first host that answers)."""
        with self.db.begin() as s:
            pool = get_by_id_or_name(s, StoragePool, ref, "storage pool")
            pool_id, name = pool.id, pool.libvirt_name
            refs = [self.hosts.ref(h) for h in hosts_of(s, pool) if h.state == HostStatus.UP]
        errors = []
        for host_ref in refs:
            try:
                usage = self.driver.pool_usage(host_ref, name)
            except DriverError as exc:
                errors.append(str(exc))
                continue
            with self.db.begin() as s:
                pool = s.get(StoragePool, pool_id)
                assert pool is not None
                self._apply_usage(pool, usage.capacity, usage.allocation, usage.available)
                pool.state, pool.error = PoolState.ACTIVE, None
                return pool
        with self.db.begin() as s:
            pool = s.get(StoragePool, pool_id)
            assert pool is not None
            pool.state = PoolState.ERROR
            pool.error = "; ".join(errors) or "no host of the pool is up"
            return pool

    def refresh_all(self, min_age: float = REFRESH_SECONDS) -> None:
        """Every pool's capacity read afresh, when it was last read ``min_age``
        seconds ago or more (the periodic reconciliation calls this on every pass);
        a pool no host answers for becomes ``error``, one that answers again
        ``active``."""
        stale = utcnow() - timedelta(seconds=min_age)
        with self.db.read() as s:
            ids = list(
                s.scalars(
                    select(StoragePool.id).where(
                        StoragePool.state.in_((PoolState.ACTIVE, PoolState.ERROR)),
                        (StoragePool.refreshed_at.is_(None)) | (StoragePool.refreshed_at <= stale),
                    )
                )
            )
        for pool_id in ids:
            try:
                self.refresh(pool_id)
            except NotFoundError:
                continue  # deleted meanwhile

    def ensure_on_host(self, host_id: str) -> None:
        """Define on a host (one just added, e.g. to a cluster that has pools) the
        pools it should have. libvirt is called outside any transaction; a host that
        refuses a pool marks that pool ``error``."""
        with self.db.begin() as s:
            host = s.get(Host, host_id)
            if host is None or host.state != HostStatus.UP:
                return
            host_name, ref = host.name, self.hosts.ref(host)
            wanted = [
                (p.id, spec_of(p, self.hosts.box))
                for p in s.scalars(
                    select(StoragePool).where(
                        StoragePool.state != PoolState.CREATING,
                        (StoragePool.host_id == host.id)
                        | (
                            (StoragePool.cluster_id == host.cluster_id)
                            & StoragePool.cluster_id.is_not(None)
                        ),
                    )
                )
            ]
        for pool_id, spec in wanted:
            try:
                self.driver.ensure_pool(ref, spec)
            except DriverError as exc:
                with self.db.begin() as s:
                    pool = s.get(StoragePool, pool_id)
                    if pool is not None:
                        pool.state, pool.error = PoolState.ERROR, f"host {host_name}: {exc}"

    @staticmethod
    def _apply_usage(pool: StoragePool, capacity: int, allocation: int, available: int) -> None:
        pool.capacity_bytes = capacity
        pool.allocation_bytes = allocation
        pool.available_bytes = available
        pool.refreshed_at = utcnow()


def one_host(session: Session, pool: StoragePool, hosts: HostService) -> HostRef:
    """A host through which the pool's volumes can be worked on."""
    for host in hosts_of(session, pool):
        if host.state == HostStatus.UP:
            return hosts.ref(host)
    raise Unavailable(f"no host of storage pool {pool.name!r} is up")
