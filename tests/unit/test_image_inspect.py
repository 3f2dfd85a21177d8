import subprocess
from pathlib import Path

import pytest

from nubis.images.inspect import ImageRejected, inspect_image


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def test_plain_qcow2_is_accepted_with_its_virtual_size(tmp_path: Path):
    img = tmp_path / "a.qcow2"
    qemu_img("create", "-f", "qcow2", str(img), "64M")
    facts = inspect_image(img)
    assert facts.disk_format == "qcow2"
    assert facts.virtual_size == 64 * 1024 * 1024


def test_qcow2_with_backing_file_is_refused(tmp_path: Path):
    base = tmp_path / "base.qcow2"
    qemu_img("create", "-f", "qcow2", str(base), "64M")
    top = tmp_path / "top.qcow2"
    qemu_img("create", "-f", "qcow2", "-b", "/etc/shadow", "-F", "raw", str(top), "64M")
    with pytest.raises(ImageRejected, match="backing file"):
        inspect_image(top)


def test_qcow2_with_external_data_file_is_refused(tmp_path: Path):
    img = tmp_path / "d.qcow2"
    qemu_img("create", "-f", "qcow2", "-o", f"data_file={tmp_path / 'data.raw'}", str(img), "1M")
    with pytest.raises(ImageRejected, match="data file"):
        inspect_image(img)


def test_raw_and_iso_are_told_apart(tmp_path: Path):
    raw = tmp_path / "disk.raw"
    raw.write_bytes(b"\0" * 65536)
    assert inspect_image(raw).disk_format == "raw"
    (tmp_path / "content").mkdir()
    (tmp_path / "content" / "hello.txt").write_text("hi")
    iso = tmp_path / "x.iso"
    subprocess.run(["genisoimage", "-quiet", "-o", str(iso), str(tmp_path / "content")], check=True)
    assert inspect_image(iso).disk_format == "iso"


def test_other_formats_are_refused(tmp_path: Path):
    img = tmp_path / "a.vmdk"
    qemu_img("create", "-f", "vmdk", str(img), "16M")
    with pytest.raises(ImageRejected, match="not accepted"):
        inspect_image(img)
