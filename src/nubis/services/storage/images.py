"""The image store (secondary storage): import, streamed upload, inspection, deletion.

An image's data is staged, inspected (qemu-img: slow, so outside any transaction),
then recorded in a short transaction that checks the name and the project's image
quotas. Names are unique within a project (and among public images); a caller
finding an image by name gets its project's, else the public one.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio
from sqlalchemy import ColumnElement, or_, select, true, update
from sqlalchemy.orm import Session

from nubis.db.models import (
    Host,
    HostStatus,
    Image,
    ImageStatus,
    Instance,
    Volume,
    VolumeAttachment,
    new_id,
)
from nubis.db.session import Database
from nubis.drivers.errors import DriverError
from nubis.images.inspect import ImageFacts, ImageRejected, inspect_image
from nubis.services.core.errors import BadRequest, Conflict, Forbidden, NotFoundError, TooLarge
from nubis.services.core.lookup import validate_name
from nubis.services.core.principal import Principal
from nubis.services.identity import quotas
from nubis.services.inventory.hosts import HostService
from nubis.tasks.in_flight import InFlight

CHUNK = 1024 * 1024
ROOT_DEVICE = "vda"  # an instance's root disk (a volume when on a pool: see volumes.py)
GIB = 1024**3
KIND = "image"  # the lease of an upload in flight: image:<id>


def image_volume_name(image: Image) -> str:
    """The name of an image's copy in a host's disk pool."""
    return f"image-{image.id}"


def visible(principal: Principal) -> ColumnElement[bool]:
    """Images a caller sees: public ones and its project's (the system administrator: all)."""
    if principal.all_projects:
        return true()
    return or_(Image.project_id.is_(None), Image.project_id == principal.project_id)


def get_visible(session: Session, principal: Principal, ref: str) -> Image:
    """An image the caller may see and use, by id or name; another project's private
    one is not found. A name names one image among a project's and the public ones
    (``check_name``); the system administrator, who sees every project's, gets its
    own project's or the public one first, else 409 when several projects use it."""
    if not isinstance(ref, str) or not ref:
        raise BadRequest("image must be given by id or name")
    query = select(Image).where(visible(principal))
    row = session.scalars(query.where(Image.id == ref)).first()
    if row is not None:
        return row
    named = list(session.scalars(query.where(Image.name == ref).order_by(Image.created_at)))
    for owner in (principal.project_id, None):
        for image in named:
            if image.project_id == owner:
                return image
    if len(named) == 1:
        return named[0]
    if named:
        raise Conflict(f"several images are named {ref!r}: give the id")
    raise NotFoundError(f"image {ref!r} not found")


@dataclass
class Staged:
    """An upload written to the store's staging area, not yet an image."""

    image_id: str
    path: Path
    digest: hashlib._Hash = field(default_factory=hashlib.sha256)


class ImageService:
    def __init__(
        self,
        store: Path,
        hosts: HostService,
        max_upload_bytes: int,
        in_flight: InFlight,
        import_dir: Path | None = None,
    ) -> None:
        self.in_flight = in_flight
        self.store = store
        self.hosts = hosts
        self.max_upload_bytes = max_upload_bytes
        self.import_dir = import_dir
        # called with an image's id once it is deleted (its copies in RBD pools go)
        self.on_delete: list[Callable[[str], None]] = []

    def path(self, image: Image) -> Path:
        return self.store / image.id

    def cleanup_partials(self, min_age: float) -> int:
        """Remove files a dead process left half-written (an upload, a copy): those
        not written for ``min_age`` seconds, so that a file another controller is
        writing into a shared store stays (at start-up, and in housekeeping)."""
        cutoff = time.time() - min_age
        removed = 0
        for p in self.store.glob("*.partial"):
            try:
                if p.stat().st_mtime < cutoff:
                    p.unlink()
                    removed += 1
            except FileNotFoundError:
                continue  # finished or removed meanwhile
        return removed

    def check_name(self, session: Session, name: str, project_id: str | None) -> None:
        """A new image's name must be free among the images any one project sees: a
        project's image may not take the name of another of its images nor of a
        public one (a member could otherwise shadow a public image for teammates),
        a public image not the name of any image. Two projects may use one name."""
        validate_name(name, "image")
        taken = select(Image.id).where(Image.name == name)
        if project_id is not None:
            taken = taken.where(or_(Image.project_id.is_(None), Image.project_id == project_id))
        if session.scalar(taken.limit(1)) is not None:
            raise Conflict(f"an image named {name!r} already exists")

    def check_upload_size(self, length: int | None) -> None:
        """Refuse an upload announced larger than the image store takes."""
        if length is not None and length > self.max_upload_bytes:
            raise TooLarge(
                f"the upload is {length} bytes; images may be at most {self.max_upload_bytes} bytes"
            )

    def new_staging(self, image_id: str | None = None) -> Staged:
        image_id = image_id or new_id()
        return Staged(image_id, self.store / f"{image_id}.partial")

    def open_import(self, path: str) -> int:
        """A file descriptor of the file ``path`` names in the import directory (a path
        under it, or relative to it). Each component is opened without following a
        symbolic link (O_NOFOLLOW, relative to its parent's descriptor), so neither a
        link nor ``..`` leads out of it: nothing else of the server can be read."""
        if self.import_dir is None:
            raise Forbidden("importing from a server path is turned off (no import_dir)")
        root = self.import_dir
        given = Path(path)
        try:
            relative = given.relative_to(root) if given.is_absolute() else given
        except ValueError:
            raise Forbidden(f"only files in the import directory {root} can be imported") from None
        parts = relative.parts
        if not parts or any(part in ("..", ".") for part in parts):
            raise BadRequest(f"give a file in the import directory {root}")
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for part in parts[:-1]:
                inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                os.close(fd)
                fd = inner
            found = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
        except OSError as exc:
            raise BadRequest(
                f"{path} is not a file in the import directory {root} "
                f"({exc.strerror}; symbolic links are not followed)"
            ) from None
        finally:
            os.close(fd)
        if not stat.S_ISREG(os.fstat(found).st_mode):
            os.close(found)
            raise BadRequest(f"{path} is not a regular file")
        return found

    def stage_file(self, source: Path | int) -> Staged:
        """Copy a local file (a path Nubis chose, or a descriptor from ``open_import``)
        into the store's staging area, hashing it on the way."""
        if isinstance(source, Path) and not source.is_file():
            raise BadRequest(f"{source} is not a readable file")
        staged = self.new_staging()
        try:
            with open(source, "rb") as src, open(staged.path, "wb") as dst:
                while chunk := src.read(CHUNK):
                    staged.digest.update(chunk)
                    dst.write(chunk)
        except BaseException:
            staged.path.unlink(missing_ok=True)
            raise
        return staged

    async def stage_stream(
        self, chunks: AsyncIterator[bytes], image_id: str | None = None
    ) -> Staged:
        """Write an upload to the staging area chunk by chunk (never all in memory);
        an upload longer than the store takes is cut off (413) and removed."""
        staged = self.new_staging(image_id)
        written = 0
        try:
            with open(staged.path, "wb") as dst:
                async for chunk in chunks:
                    written += len(chunk)
                    self.check_upload_size(written)
                    staged.digest.update(chunk)
                    await anyio.to_thread.run_sync(dst.write, chunk)
        except BaseException:
            staged.path.unlink(missing_ok=True)
            raise
        return staged

    def inspect(self, staged: Staged, fmt: str | None = None) -> ImageFacts:
        """What the staged data is (qemu-img: slow, call it outside any transaction);
        refused data (400) is removed. ``fmt``: the format Nubis made it in."""
        try:
            if staged.path.stat().st_size == 0:
                raise BadRequest("the image is empty")
            try:
                return inspect_image(staged.path, fmt)
            except ImageRejected as exc:
                raise BadRequest(str(exc)) from exc
        except BaseException:
            staged.path.unlink(missing_ok=True)
            raise

    def register(
        self,
        session: Session,
        name: str,
        staged: Staged,
        facts: ImageFacts,
        project_id: str | None,
    ) -> Image:
        """Record inspected, staged data as a new image; on any error nothing remains."""
        try:
            self.check_name(session, name, project_id)
            _claim(session, project_id, {"images": 1, "image_gib": _gib(facts.size)})
            image = Image(id=staged.image_id, name=name, project_id=project_id)
            session.add(image)
            return self._keep(session, image, staged, facts)
        finally:
            staged.path.unlink(missing_ok=True)

    # -- two-step: a record first, its data after (how Glance clients make images) --------
    def reserve(
        self,
        session: Session,
        name: str,
        project_id: str | None,
        image_id: str | None = None,
        status: str = ImageStatus.QUEUED,
    ) -> Image:
        """An image without data yet: ``queued`` for an upload (``fill``), ``creating``
        while a task makes it (``complete``). Nothing can use it before it is active.
        It counts toward the project's image quota from now on."""
        self.check_name(session, name, project_id)
        _claim(session, project_id, {"images": 1})
        image = Image(id=image_id or new_id(), name=name, project_id=project_id, status=status)
        session.add(image)
        session.flush()
        return image

    def complete(
        self,
        session: Session,
        name: str,
        staged: Staged,
        facts: ImageFacts,
        project_id: str | None,
    ) -> Image:
        """The data a task made for its ``creating`` image (registered anew when the
        task was queued before images were recorded up front)."""
        image = session.get(Image, staged.image_id, with_for_update=True)
        if image is None:
            return self.register(session, name, staged, facts, project_id)
        try:
            _claim(session, image.project_id, {"image_gib": _gib(facts.size)})
            return self._keep(session, image, staged, facts)
        finally:
            staged.path.unlink(missing_ok=True)

    def _keep(self, session: Session, image: Image, staged: Staged, facts: ImageFacts) -> Image:
        """Record what the staged data is on ``image`` (now active) and move the data
        into the store, under the image's id."""
        _record(image, staged, facts)
        session.flush()
        os.replace(staged.path, self.store / image.id)
        return image

    def give_up(self, session: Session, image_id: str, error: str) -> None:
        """A task could not make its image: it stays, in ``error``, saying why."""
        session.execute(
            update(Image)
            .where(Image.id == image_id, Image.status == ImageStatus.CREATING)
            .values(status=ImageStatus.ERROR, error=error)
        )

    def start_fill(self, db: Database, image_id: str, length: int | None = None) -> None:
        """Claim a queued image for one upload (``saving``); a second upload is refused.
        Its lease is held until the upload ends (``fill``, ``abandon_fill``): no
        start-up of another controller queues the image again meanwhile."""
        self.check_upload_size(length)
        if not self.in_flight.begin(KIND, image_id):
            raise Conflict("the image is being uploaded already")
        try:
            with db.begin() as s:
                claimed = s.execute(
                    update(Image)
                    .where(Image.id == image_id, Image.status == ImageStatus.QUEUED)
                    .values(status=ImageStatus.SAVING)
                ).rowcount
                image = s.get(Image, image_id)
                if claimed != 1 and image is not None:
                    raise Conflict(
                        f"image {image.name!r} is {image.status}: its data can be uploaded once"
                    )
                if image is None:
                    raise NotFoundError("the image is gone")
        except BaseException:
            self.in_flight.end(KIND, image_id)
            raise

    def fill(self, db: Database, image_id: str, staged: Staged) -> Image:
        """Make a ``saving`` image active with the staged data; when the data is refused
        the image is queued again and nothing of the upload remains."""
        try:
            facts = self.inspect(staged)
            with db.begin() as s:
                image = s.get(Image, image_id, with_for_update=True)
                if image is None or image.status != ImageStatus.SAVING:
                    raise Conflict("the image was deleted during the upload")
                _claim(s, image.project_id, {"image_gib": _gib(facts.size)})
                kept = self._keep(s, image, staged, facts)
            self.in_flight.end(KIND, image_id)
            return kept
        except BaseException:
            self.abandon_fill(db, image_id)
            raise
        finally:
            staged.path.unlink(missing_ok=True)

    def abandon_fill(self, db: Database, image_id: str) -> None:
        with db.begin() as s:
            s.execute(
                update(Image)
                .where(Image.id == image_id, Image.status == ImageStatus.SAVING)
                .values(status=ImageStatus.QUEUED)
            )
        self.in_flight.end(KIND, image_id)

    def requeue_interrupted(self, db: Database) -> int:
        """Uploads a dead process left ``saving`` are queued again (at start-up, and
        in the housekeeping rounds: never one another controller is receiving)."""
        with db.read() as s:
            found = list(s.scalars(select(Image.id).where(Image.status == ImageStatus.SAVING)))
        if not found:
            return 0
        with self.in_flight.orphans(KIND, found) as orphaned, db.begin() as s:
            return s.execute(
                update(Image)
                .where(Image.status == ImageStatus.SAVING, Image.id.in_(orphaned))
                .values(status=ImageStatus.QUEUED)
            ).rowcount

    def import_file(
        self, db: Database, name: str, source: Path | int, project_id: str | None
    ) -> Image:
        """A file of this machine as a new image: a path Nubis chose, or a descriptor
        from ``open_import`` (closed here)."""
        try:
            with db.read() as s:
                self.check_name(s, name, project_id)
        except BaseException:
            if isinstance(source, int):
                os.close(source)
            raise
        staged = self.stage_file(source)
        facts = self.inspect(staged)
        with db.begin() as s:
            return self.register(s, name, staged, facts, project_id)

    def delete(self, db: Database, principal: Principal, ref: str) -> None:
        """Refuse while in use; else mark ``deleting`` (no new instance can use it),
        remove the copies on hosts (outside any transaction), then the record and file.
        A delete interrupted half-way can simply be asked again."""
        with db.begin() as s:
            image = get_visible(s, principal, ref)
            if image.project_id is None and not principal.all_projects:
                raise Forbidden("only the system administrator deletes a public image")
            if image.status in (ImageStatus.CREATING, ImageStatus.SAVING):
                raise Conflict(
                    f"image {image.name!r} is being made ({image.status}); delete it after"
                )
            loaded = s.scalars(
                select(Instance.name)
                .where(Instance.cdrom_image_id == image.id)
                .order_by(Instance.name)
            ).all()
            if loaded:
                raise Conflict(
                    f"image {image.name!r} is in the CD-ROM drive of {len(loaded)} "
                    f"instance(s): {_names(loaded)}; eject it first"
                )
            on_pools = select(VolumeAttachment.instance_id).where(
                VolumeAttachment.target == ROOT_DEVICE
            )  # root disks that are volumes: their clones, if any, are counted below
            users = s.scalars(
                select(Instance.name)
                .where(
                    Instance.image_id == image.id,
                    Instance.clone_mode == "linked",
                    Instance.id.not_in(on_pools),
                )
                .order_by(Instance.name)
            ).all()
            if users and image.disk_format != "iso":  # an ISO is no base of any disk
                raise Conflict(
                    f"image {image.name!r} is the base of {len(users)} linked clone(s): "
                    f"{_names(users)}; delete them first"
                )
            clones = s.scalars(
                select(Volume.name).where(Volume.base_image_id == image.id).order_by(Volume.name)
            ).all()
            if clones:
                raise Conflict(
                    f"image {image.name!r} is the base of {len(clones)} RBD clone(s): "
                    f"{_names(clones)}; delete them first"
                )
            image.status = ImageStatus.DELETING
            hosts = [
                self.hosts.ref(h)
                for h in s.scalars(select(Host).where(Host.state == HostStatus.UP))
            ]
        # copies on hosts that are up are removed now; a copy on a host that is down
        # stays until removed by hand (known gap, see docs/hosts-and-images.md)
        volume = image_volume_name(image)
        for host in hosts:
            try:
                self.hosts.driver.delete_volume(host, volume + ".ready")
                self.hosts.driver.delete_volume(host, volume)
            except DriverError:
                pass
        with db.begin() as s:
            row = s.get(Image, image.id)
            if row is not None:
                # full clones were made from it but do not need it: they forget it
                s.execute(
                    update(Instance).where(Instance.image_id == image.id).values(image_id=None)
                )
                s.delete(row)
        for hook in self.on_delete:
            hook(image.id)
        self.path(image).unlink(missing_ok=True)


def _names(names: Sequence[str]) -> str:
    return ", ".join(names[:10]) + (" ..." if len(names) > 10 else "")


def _gib(size: int) -> int:
    return -(-size // GIB)


def _claim(session: Session, project_id: str | None, wants: dict[str, int]) -> None:
    """Count a project's image against its quotas (public images belong to none)."""
    if project_id is not None:
        quotas.claim(session, project_id, wants)


def _record(image: Image, staged: Staged, facts: ImageFacts) -> None:
    """What the inspected data is, on ``image`` (now active)."""
    image.status = ImageStatus.ACTIVE
    image.error = None
    image.disk_format = facts.disk_format
    image.virtual_size = facts.virtual_size
    image.size = facts.size
    image.sha256 = staged.digest.hexdigest()
