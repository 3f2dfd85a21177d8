"""Attack: importing a server file as an image to read it (the data directory's
``secret.key``, the database, /etc/shadow), by a path outside the import
directory, by ``..``, or by a symbolic link planted inside it."""

import os

import pytest
from sqlalchemy import func, select

from nubis.db.models import Image
from tests.unit.test_api_contract import qcow2


def images(platform) -> int:
    with platform.db.read() as s:
        return s.scalar(select(func.count()).select_from(Image)) or 0


@pytest.fixture
def import_dir(platform):
    return platform.settings.images_import_dir


def attempts(platform, import_dir) -> list[tuple[str, int, str]]:
    data = platform.settings.data_dir
    secret = data / "secret.key"
    os.symlink(secret, import_dir / "innocent.img")  # a link planted in the directory
    os.makedirs(import_dir / "sub")
    os.symlink(data, import_dir / "sub" / "data")  # a directory link on the way
    return [
        (str(secret), 403, "only files in the import directory"),
        (str(data / "nubis.db"), 403, "only files in the import directory"),
        ("/etc/shadow", 403, "only files in the import directory"),
        (str(import_dir / ".." / "secret.key"), 400, "in the import directory"),
        ("../secret.key", 400, "in the import directory"),
        ("innocent.img", 400, "symbolic links are not followed"),
        (str(import_dir / "innocent.img"), 400, "symbolic links are not followed"),
        ("sub/data/secret.key", 400, "symbolic links are not followed"),
        ("sub", 400, "not a regular file"),
        ("", 400, "in the import directory"),
    ]


def test_only_regular_files_inside_the_import_directory_are_imported(
    client, platform, callers, import_dir
):
    admin = callers["system_admin"]
    before = images(platform)
    for path, status, fragment in attempts(platform, import_dir):
        resp = admin.post("/images", json={"name": "stolen", "path": path})
        assert resp.status_code == status, (path, resp.text)
        assert fragment in resp.json()["error"]["message"], (path, resp.text)
    assert images(platform) == before
    assert [p.name for p in platform.settings.image_dir.iterdir()] == []
    # a real file there is imported
    (import_dir / "real.qcow2").write_bytes(qcow2(import_dir, "made.qcow2"))
    ok = admin.post("/images", json={"name": "real", "path": "real.qcow2"})
    assert ok.status_code == 201, ok.text
    # and importing is the system administrator's alone
    refused = callers["admin"].post("/images", json={"name": "x", "path": "real.qcow2"})
    assert refused.status_code == 403


def test_the_data_directory_cannot_be_made_the_import_directory(tmp_path):
    from nubis.config import Settings

    data = tmp_path / "data"
    for bad in (data, tmp_path, "/"):
        settings = Settings(data_dir=data, import_dir=bad)
        with pytest.raises(ValueError, match="holds the data directory"):
            settings.ensure_dirs()
    assert Settings(data_dir=data).images_import_dir == (data / "import").resolve()
