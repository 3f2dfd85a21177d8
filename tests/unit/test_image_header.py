"""Header sniffing of streamed uploads, on images made by the real qemu-img."""

import subprocess
from pathlib import Path

import pytest

from nubis.images.header import HEAD_BYTES, Qcow2Layout, qcow2_layout, sniff
from nubis.images.inspect import ImageRejected

MIB = 1024 * 1024


# QEMU times PBKDF2 rounds by thread CPU time before writing a LUKS header; on a
# coarse clock a round can measure 0 ms and qemu-img gives up with this message.
CPU_CLOCK_TOO_COARSE = "Unable to get accurate CPU usage"


def qemu_img(*args: str) -> None:
    for _attempt in range(5):
        proc = subprocess.run(["qemu-img", *args], capture_output=True, text=True)
        if CPU_CLOCK_TOO_COARSE not in proc.stderr:
            break
    assert proc.returncode == 0, f"qemu-img {' '.join(args)}: {proc.stderr}"


def make(tmp_path: Path, name: str, fmt: str, *args: str, size: str = "3M") -> Path:
    path = tmp_path / name
    qemu_img("create", "-q", "-f", fmt, *args, str(path), size)
    return path


def facts(path: Path):
    with open(path, "rb") as fh:
        return sniff(fh.read(HEAD_BYTES), path.stat().st_size)


@pytest.mark.parametrize("compat", ["0.10", "1.1"])
def test_qcow2_gives_its_virtual_size(tmp_path, compat):
    got = facts(make(tmp_path, "a.qcow2", "qcow2", "-o", f"compat={compat}", size="5G"))
    assert (got.disk_format, got.virtual_size) == ("qcow2", 5 * 1024**3)


def test_raw_is_its_bytes(tmp_path):
    path = tmp_path / "disk.raw"
    path.write_bytes(b"\x00" * MIB + b"hello")
    got = facts(path)
    assert (got.disk_format, got.virtual_size) == ("raw", MIB + 5)


def test_dangerous_qcow2_are_refused(tmp_path):
    base = make(tmp_path, "base.qcow2", "qcow2")
    backed = make(tmp_path, "b.qcow2", "qcow2", "-b", str(base), "-F", "qcow2")
    with pytest.raises(ImageRejected, match="backing file"):
        facts(backed)
    data = make(tmp_path, "d.qcow2", "qcow2", "-o", f"data_file={tmp_path / 'd.raw'}")
    with pytest.raises(ImageRejected, match="external data file"):
        facts(data)
    encrypted = tmp_path / "e.qcow2"
    qemu_img(
        "create", "-q", "--object", "secret,id=s0,data=pw", "-f", "qcow2",
        "-o", "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10",
        str(encrypted), "3M",
    )  # fmt: skip
    with pytest.raises(ImageRejected, match="encrypted"):
        facts(encrypted)


@pytest.mark.parametrize(
    "fmt,label", [("vmdk", "vmdk"), ("vhdx", "vhdx"), ("vpc", "vpc"), ("vdi", "vdi")]
)
def test_other_formats_are_named_and_refused(tmp_path, fmt, label):
    with pytest.raises(ImageRejected, match=label):
        facts(make(tmp_path, f"x.{fmt}", fmt))


def test_empty_and_truncated_are_refused(tmp_path):
    with pytest.raises(ImageRejected, match="empty"):
        sniff(b"", 0)
    with pytest.raises(ImageRejected, match="truncated"):
        sniff(b"QFI\xfb\x00\x00\x00\x03", 8)


def layout(path: Path):
    with open(path, "rb") as fh:
        return qcow2_layout(fh.read(64 * 1024))


@pytest.mark.parametrize("compat", ["0.10", "1.1"])
def test_qcow2_layout_names_what_qemu_would_open(tmp_path, compat):
    """The driver reads a qcow2 file's references itself before any copy of it: the
    backing file, its format, an external data file, as qemu-img wrote them."""
    base = make(tmp_path, "base.raw", "raw")
    plain = layout(make(tmp_path, "p.qcow2", "qcow2", "-o", f"compat={compat}", size="5G"))
    assert plain == Qcow2Layout(5 * 1024**3, None, None, False)
    backed = make(
        tmp_path, "b.qcow2", "qcow2", "-o", f"compat={compat}", "-b", str(base), "-F", "raw"
    )
    assert layout(backed) == Qcow2Layout(3 * MIB, str(base), "raw", False)
    data = make(tmp_path, "d.qcow2", "qcow2", "-o", f"data_file={tmp_path / 'd.raw'}")
    assert layout(data).data_file


def test_qcow2_layout_refuses_what_it_cannot_read(tmp_path):
    with pytest.raises(ImageRejected, match="not a qcow2"):
        qcow2_layout(b"\x00" * 512)
    base = make(tmp_path, "base.raw", "raw")
    backed = make(tmp_path, "b.qcow2", "qcow2", "-b", str(base), "-F", "raw")
    head = backed.read_bytes()[:120]  # the header, not the name it points at
    with pytest.raises(ImageRejected, match="past what was read"):
        qcow2_layout(head)
