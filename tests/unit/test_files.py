"""Files Nubis writes for itself are whole or absent, even when a process dies
half-way through writing one (the server's certificate, secret key, passwords)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from nubis.files import write_atomically
from nubis.tls import make_self_signed, server_certificate


def test_a_file_is_written_whole_with_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "secret"
    write_atomically(path, "s3cret\n")
    assert path.read_text() == "s3cret\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    write_atomically(path, b"other", 0o644)
    assert path.read_bytes() == b"other"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(p.name for p in path.parent.iterdir()) == ["secret"]


def test_keep_existing_leaves_another_writers_file(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    write_atomically(path, "first", keep_existing=True)
    write_atomically(path, "second", keep_existing=True)
    assert path.read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["secret.key"]


def test_a_write_cut_short_leaves_the_old_file_and_no_scrap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "cert.pem"
    write_atomically(path, "old")

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space"):
        write_atomically(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["cert.pem"]


def test_a_key_without_its_certificate_is_made_again(tmp_path: Path) -> None:
    """A first start that died after writing the key: the next start makes a new
    pair instead of serving an empty or missing certificate."""
    made = make_self_signed(tmp_path / "tls", ["localhost"], "127.0.0.1")
    made.cert_file.unlink()
    again = server_certificate(tmp_path, None, None, ["localhost"], "127.0.0.1")
    assert again.cert_file.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    assert again.key_file.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert stat.S_IMODE(again.key_file.stat().st_mode) == 0o600
