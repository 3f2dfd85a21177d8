"""Volume data carried through libvirt streams (virStorageVolUpload / Download), so a
remote host's volumes come and go like the local host's: chunk by chunk, never whole
in memory. Each transfer is an object its caller feeds or drains, then finishes or
aborts."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import libvirt

from nubis.drivers.libvirt import storage
from nubis.drivers.libvirt.connection import translate

CHUNK = 1024 * 1024
WINDOW = 16 * CHUNK  # bytes of a download asked of the daemon at a time
T = TypeVar("T")


def _guard(fn: Callable[[], T], what: str) -> T:
    try:
        return fn()
    except libvirt.libvirtError as exc:
        raise translate(exc, what) from exc


class VolumeUpload:
    """Bytes sent into a volume, from its start; ``finish`` once all are sent."""

    def __init__(self, stream: libvirt.virStream, what: str) -> None:
        self.stream = stream
        self.what = what
        self.sent = 0

    def write(self, data: bytes) -> None:
        done = 0
        while done < len(data):
            done += _guard(lambda rest=data[done:]: self.stream.send(rest), self.what)
        self.sent += done

    def finish(self) -> None:
        _guard(self.stream.finish, self.what)

    def abort(self) -> None:
        try:
            self.stream.abort()
        except libvirt.libvirtError:
            pass  # already broken: nothing more to stop


class VolumeDownload:
    """A volume's bytes, ``length`` in all, read chunk by chunk until ``b""``.

    libvirt's client library takes everything the daemon streams off the socket as
    soon as its event loop runs (Nubis runs one, for domain events): a stream read
    slower than the disk is queued whole in this process's memory. So the volume is
    asked for one window at a time, the next only once the last has been read."""

    def __init__(
        self, conn: libvirt.virConnect, vol: libvirt.virStorageVol, length: int, what: str
    ) -> None:
        self.conn = conn
        self.vol = vol
        self.length = length
        self.what = what
        self.received = 0
        self.stream: libvirt.virStream | None = None
        self.window_end = 0

    def _next_window(self) -> libvirt.virStream:
        stream = self.conn.newStream(0)
        size = min(WINDOW, self.length - self.received)
        self.vol.download(stream, self.received, size, 0)
        self.window_end = self.received + size
        return stream

    def read(self) -> bytes:
        if self.received >= self.length:
            return b""

        def read() -> bytes:
            if self.stream is None:
                self.stream = self._next_window()
            data = self.stream.recv(min(CHUNK, self.window_end - self.received))
            if isinstance(data, int):  # -2: would block, which a blocking stream never does
                raise RuntimeError("the stream would block")
            if not data:
                raise RuntimeError(f"the volume ended at {self.received} of {self.length} bytes")
            if self.received + len(data) >= self.window_end:
                self.stream.recv(1)  # the end of the window's stream
                self.stream.finish()
                self.stream = None
            return data

        data = _guard(read, self.what)
        self.received += len(data)
        return data

    def finish(self) -> None:
        if self.stream is not None:
            _guard(self.stream.finish, self.what)
            self.stream = None

    def abort(self) -> None:
        if self.stream is not None:
            try:
                self.stream.abort()
            except libvirt.libvirtError:
                pass
            self.stream = None


def open_upload(
    conn: libvirt.virConnect, vol: libvirt.virStorageVol, length: int, what: str
) -> VolumeUpload:
    stream = conn.newStream(0)
    vol.upload(stream, 0, length, 0)
    return VolumeUpload(stream, what)


def open_download(
    conn: libvirt.virConnect, vol: libvirt.virStorageVol, what: str
) -> VolumeDownload:
    """The whole file behind the volume (its physical size: a qcow2 file as it is)."""
    return VolumeDownload(conn, vol, storage.file_size(vol), what)


def drain(
    transfer: VolumeDownload,
    write: Callable[[bytes], None],
    on_progress: Callable[[int], None] | None = None,
) -> None:
    """Read a whole download into ``write``, reporting whole percents as they pass."""
    shown = 0
    try:
        while data := transfer.read():
            write(data)
            percent = min(99, transfer.received * 100 // max(transfer.length, 1))
            if on_progress is not None and percent > shown:
                shown = percent
                on_progress(percent)
        transfer.finish()
    except BaseException:
        transfer.abort()
        raise
