"""Disk leases of libvirt's lock manager (virtlockd), read from the control plane.

With ``lock_manager = "lockd"`` and ``file_lockspace_dir`` on the cluster's shared
storage, every QEMU process holds a POSIX lock on a lease file named after the
SHA-256 of each disk's path, for as long as it runs (libvirtd may die meanwhile:
virtlockd keeps the lock). A lease that can be taken, or no lease file at all, says
no QEMU anywhere has that disk open.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path

from nubis import blocking


def lease_name(disk_path: str) -> str:
    return hashlib.sha256(disk_path.encode()).hexdigest()


def lease_held(lockspace: Path, disk_path: str) -> bool:
    """True while some QEMU process holds the disk's lease. Probing takes the lock for
    an instant (non-blocking) and releases it at once."""
    blocking.check("lease probe")
    path = lockspace / lease_name(disk_path)
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False  # virtlockd removes a lease file when it releases it
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
    except OSError:
        return True
    else:
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, 0)
        return False
    finally:
        os.close(fd)
