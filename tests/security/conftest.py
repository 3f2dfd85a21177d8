"""The attack tests use the integration tests' real server, pool and guest, and the
unit tests' control plane with one caller in every role, as each attack needs."""

from tests.integration.conftest import guest, pool, server  # noqa: F401
from tests.unit.conftest import callers, client, control_plane, platform  # noqa: F401
