"""Unit-level fixtures: a control plane with no task worker and no local libvirtd."""

import pytest

from nubis.config import Settings
from nubis.platform import Platform


@pytest.fixture
def control_plane(db_url, tmp_path):
    """A started Platform on a fresh database; hosts are added by the test module."""
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=db_url,
        register_local_host=False,
        build_tiny_image=False,
        task_workers=0,
        pool_path=tmp_path / "disks",
        console_path=tmp_path / "console",
    )
    platform = Platform(settings)
    platform.start()
    yield platform
    platform.stop()
