import pytest

from tests.integration.server import NubisServer


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One Nubis server per test module, managing the real local libvirtd."""
    data = tmp_path_factory.mktemp("nubis") / "data"
    srv = NubisServer(data, NUBIS_RECONCILE_INTERVAL_SECONDS="600").start()
    yield srv
    srv.stop()
