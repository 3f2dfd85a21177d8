"""Files Nubis writes for itself (certificates, keys, passwords, ids)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomically(
    path: Path, data: bytes | str, mode: int = 0o600, *, keep_existing: bool = False
) -> None:
    """``data`` in ``path`` with ``mode``, all or nothing: it is written to a file
    beside it, synced and renamed over it, so that a reader (or the next start after a
    crash half-way) finds either no file or the whole of it, never an empty one.
    With ``keep_existing`` a file already there (another process's) stays."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            fh.write(data.encode() if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        if keep_existing:
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
        else:
            os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
