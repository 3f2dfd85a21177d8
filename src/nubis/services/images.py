"""The image store (secondary storage): import, streamed upload, inspection, deletion."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio
from sqlalchemy import ColumnElement, or_, select, true, update
from sqlalchemy.orm import Session

from nubis.db.models import Host, Image, Instance, new_id
from nubis.db.session import Database
from nubis.drivers.errors import DriverError
from nubis.images.inspect import ImageRejected, inspect_image
from nubis.services.auth import Principal
from nubis.services.errors import BadRequest, Conflict, Forbidden, NotFoundError
from nubis.services.hosts import HostService
from nubis.services.lookup import get_by_id_or_name, validate_name

CHUNK = 1024 * 1024


def image_volume_name(image: Image) -> str:
    """The name of an image's copy in a host's disk pool."""
    return f"image-{image.id}"


def visible(principal: Principal) -> ColumnElement[bool]:
    """Images a caller sees: public ones and its project's (the system administrator: all)."""
    if principal.all_projects:
        return true()
    return or_(Image.project_id.is_(None), Image.project_id == principal.project_id)


def get_visible(session: Session, principal: Principal, ref: str) -> Image:
    """An image the caller may see and use; another project's private one is not found."""
    image = get_by_id_or_name(session, Image, ref, "image")
    if not principal.all_projects and image.project_id not in (None, principal.project_id):
        raise NotFoundError(f"image {ref!r} not found")
    return image


@dataclass
class Staged:
    """An upload written to the store's staging area, not yet an image."""

    image_id: str
    path: Path
    digest: hashlib._Hash = field(default_factory=hashlib.sha256)


class ImageService:
    def __init__(self, store: Path, hosts: HostService) -> None:
        self.store = store
        self.hosts = hosts

    def path(self, image: Image) -> Path:
        return self.store / image.id

    def cleanup_partials(self) -> int:
        """Remove uploads a dead process left half-written (run at start-up)."""
        partials = list(self.store.glob("*.partial"))
        for p in partials:
            p.unlink(missing_ok=True)
        return len(partials)

    def check_name(self, session: Session, name: str) -> None:
        validate_name(name, "image")
        if session.scalar(select(Image).where(Image.name == name)) is not None:
            raise Conflict(f"an image named {name!r} already exists")

    def new_staging(self, image_id: str | None = None) -> Staged:
        image_id = image_id or new_id()
        return Staged(image_id, self.store / f"{image_id}.partial")

    def stage_file(self, source: Path) -> Staged:
        """Copy a local file into the store's staging area, hashing it on the way."""
        if not source.is_file():
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
        """Write an upload to the staging area chunk by chunk (never all in memory)."""
        staged = self.new_staging(image_id)
        try:
            with open(staged.path, "wb") as dst:
                async for chunk in chunks:
                    staged.digest.update(chunk)
                    await anyio.to_thread.run_sync(dst.write, chunk)
        except BaseException:
            staged.path.unlink(missing_ok=True)
            raise
        return staged

    def register(
        self, session: Session, name: str, staged: Staged, project_id: str | None
    ) -> Image:
        """Inspect a staged file and record it as an image; on any error nothing remains."""
        try:
            self.check_name(session, name)
            image = Image(id=staged.image_id, name=name, project_id=project_id)
            self._take(staged, image)
            session.add(image)
            session.flush()
            os.replace(staged.path, self.store / staged.image_id)
        finally:
            staged.path.unlink(missing_ok=True)
        return image

    @staticmethod
    def _take(staged: Staged, image: Image) -> None:
        """Inspect the staged data and record what it is on ``image`` (now active)."""
        if staged.path.stat().st_size == 0:
            raise BadRequest("the image is empty")
        try:
            facts = inspect_image(staged.path)
        except ImageRejected as exc:
            raise BadRequest(str(exc)) from exc
        image.status = "active"
        image.disk_format = facts.disk_format
        image.virtual_size = facts.virtual_size
        image.size = facts.size
        image.sha256 = staged.digest.hexdigest()

    # -- two-step: a record first, its data after (how Glance clients make images) --------
    def reserve(
        self,
        session: Session,
        name: str,
        project_id: str | None,
        image_id: str | None = None,
        status: str = "queued",
    ) -> Image:
        """An image without data yet: ``queued`` for an upload (``fill``), ``creating``
        while a task makes it (``complete``). Nothing can use it before it is active."""
        self.check_name(session, name)
        image = Image(id=image_id or new_id(), name=name, project_id=project_id, status=status)
        session.add(image)
        session.flush()
        return image

    def complete(
        self, session: Session, name: str, staged: Staged, project_id: str | None
    ) -> Image:
        """The data a task made for its ``creating`` image (registered anew when the
        task was queued before images were recorded up front)."""
        image = session.get(Image, staged.image_id, with_for_update=True)
        if image is None:
            return self.register(session, name, staged, project_id)
        try:
            self._take(staged, image)
            session.flush()
            os.replace(staged.path, self.store / staged.image_id)
        finally:
            staged.path.unlink(missing_ok=True)
        return image

    def give_up(self, session: Session, image_id: str, error: str) -> None:
        """A task could not make its image: it stays, in ``error``, saying why."""
        session.execute(
            update(Image)
            .where(Image.id == image_id, Image.status == "creating")
            .values(status="error", error=error)
        )

    def start_fill(self, session: Session, image: Image) -> None:
        """Claim a queued image for one upload (``saving``); a second upload is refused."""
        claimed = session.execute(
            update(Image)
            .where(Image.id == image.id, Image.status == "queued")
            .values(status="saving")
        ).rowcount
        if claimed != 1:
            session.refresh(image)
            raise Conflict(f"image {image.name!r} is {image.status}: its data can be uploaded once")

    def fill(self, db: Database, image_id: str, staged: Staged) -> Image:
        """Make a ``saving`` image active with the staged data; when the data is refused
        the image is queued again and nothing of the upload remains."""
        try:
            with db.begin() as s:
                image = s.get(Image, image_id, with_for_update=True)
                if image is None or image.status != "saving":
                    raise Conflict("the image was deleted during the upload")
                self._take(staged, image)
                os.replace(staged.path, self.store / image_id)
                return image
        except BaseException:
            self.abandon_fill(db, image_id)
            raise
        finally:
            staged.path.unlink(missing_ok=True)

    def abandon_fill(self, db: Database, image_id: str) -> None:
        with db.begin() as s:
            s.execute(
                update(Image)
                .where(Image.id == image_id, Image.status == "saving")
                .values(status="queued")
            )

    def requeue_interrupted(self, db: Database) -> int:
        """Uploads a dead process left ``saving`` are queued again (run at start-up)."""
        with db.begin() as s:
            return s.execute(
                update(Image).where(Image.status == "saving").values(status="queued")
            ).rowcount

    def import_file(
        self, session: Session, name: str, source: Path, project_id: str | None
    ) -> Image:
        self.check_name(session, name)
        return self.register(session, name, self.stage_file(source), project_id)

    def delete(self, db: Database, principal: Principal, ref: str) -> None:
        """Refuse while in use; else mark ``deleting`` (no new instance can use it),
        remove the copies on hosts (outside any transaction), then the record and file.
        A delete interrupted half-way can simply be asked again."""
        with db.begin() as s:
            image = get_visible(s, principal, ref)
            if image.project_id is None and not principal.all_projects:
                raise Forbidden("only the system administrator deletes a public image")
            if image.status in ("creating", "saving"):
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
            users = s.scalars(
                select(Instance.name)
                .where(Instance.image_id == image.id, Instance.clone_mode == "linked")
                .order_by(Instance.name)
            ).all()
            if users and image.disk_format != "iso":  # an ISO is no base of any disk
                raise Conflict(
                    f"image {image.name!r} is the base of {len(users)} linked clone(s): "
                    f"{_names(users)}; delete them first"
                )
            image.status = "deleting"
            hosts = [self.hosts.ref(h) for h in s.scalars(select(Host).where(Host.state == "up"))]
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
        self.path(image).unlink(missing_ok=True)


def _names(names: Sequence[str]) -> str:
    return ", ".join(names[:10]) + (" ..." if len(names) > 10 else "")
