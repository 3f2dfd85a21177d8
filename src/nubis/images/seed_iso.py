"""Small ISO 9660 images made in memory (pycdlib): cloud-init's seed discs.

Files keep their real names through Rock Ridge and Joliet (``meta-data``,
``openstack/latest/meta_data.json``), which is what Linux and cloud-init read;
the plain ISO 9660 names underneath are only derived, unique 8.3 names.
"""

from __future__ import annotations

import io
import re

import pycdlib

_ISO_CHARS = re.compile(r"[^A-Z0-9_]")


def _iso_part(name: str, length: int) -> str:
    return _ISO_CHARS.sub("_", name.upper())[:length] or "_"


class _IsoNames:
    """Unique level-1 ISO 9660 names for the paths of one image."""

    def __init__(self) -> None:
        self.taken: dict[str, str] = {}

    def name(self, parent: str, leaf: str, directory: bool) -> str:
        stem, _, ext = leaf.partition(".") if not directory else (leaf, "", "")
        for n in range(100):
            base = _iso_part(stem, 8 if n == 0 else 6)
            base = base if n == 0 else f"{base}{n:02d}"
            candidate = base if directory else f"{base}.{_iso_part(ext, 3) if ext else ''};1"
            full = f"{parent.rstrip('/')}/{candidate}"
            if full not in self.taken.values():
                return full
        raise ValueError(f"too many files named like {leaf!r}")


def build_iso(files: dict[str, bytes], volume_id: str) -> bytes:
    """An ISO image holding ``files`` (path -> content, '/'-separated, directories made
    as needed), labelled ``volume_id`` (``cidata``, ``config-2``)."""
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=1, joliet=3, rock_ridge="1.09", vol_ident=volume_id)
    names = _IsoNames()
    made: dict[str, str] = {"": "/"}  # real directory path -> its ISO path
    try:
        for path in sorted(files):
            parts = path.strip("/").split("/")
            for depth in range(1, len(parts)):
                real = "/".join(parts[:depth])
                if real in made:
                    continue
                parent = made["/".join(parts[: depth - 1])]
                iso_path = names.name(parent, parts[depth - 1], directory=True)
                names.taken[real] = iso_path
                iso.add_directory(iso_path, rr_name=parts[depth - 1], joliet_path="/" + real)
                made[real] = iso_path
            parent = made["/".join(parts[:-1])]
            iso_path = names.name(parent, parts[-1], directory=False)
            names.taken["/".join(parts)] = iso_path
            content = files[path]
            iso.add_fp(
                io.BytesIO(content),
                len(content),
                iso_path,
                rr_name=parts[-1],
                joliet_path="/" + "/".join(parts),
            )
        out = io.BytesIO()
        iso.write_fp(out)
        return out.getvalue()
    finally:
        iso.close()


def read_iso(data: bytes) -> dict[str, bytes]:
    """The files of an ISO image by their Rock Ridge names (for checks and tests)."""
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(data))
    try:
        found: dict[str, bytes] = {}
        for root, _dirs, leaves in iso.walk(rr_path="/"):
            for leaf in leaves:
                path = f"{root.rstrip('/')}/{leaf}"
                out = io.BytesIO()
                iso.get_file_from_iso_fp(out, rr_path=path)
                found[path.lstrip("/")] = out.getvalue()
        return found
    finally:
        iso.close()
