"""The native API fuzzed from its own OpenAPI document (schemathesis): every operation
with generated bodies, parameters and paths, as the logged-in administrator the policy lets call it
(system or security), data the schema allows and data it does not, must never
answer a server error. Examples are
derived deterministically, so a run fails only when the code changed.

Left out: the operations that reach outside this machine by design (adding a host
connects to its libvirt URI, an NFS pool mounts a server, an alarm's webhook host is
resolved): generated addresses must never be contacted; and the two that end the
caller's session (log out, password change): the rest of the run would be refused."""

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from nubis.api.app import create_app
from nubis.services.identity import policy
from tests.control_planes import started_control_plane

API = "/api/v1"
LEFT_OUT = {
    ("POST", "/api/v1/hosts"),
    ("POST", "/api/v1/storage-pools"),
    ("POST", "/api/v1/alarms"),
    ("DELETE", "/api/v1/auth/tokens/current"),
    ("PUT", "/api/v1/auth/password"),
}
EXAMPLES = 4  # per operation and mode: about 1,100 requests in all


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory):
    """A control plane on libvirt's test driver, and tokens of its two administrators."""
    tmp = tmp_path_factory.mktemp("fuzz")
    platform = started_control_plane(tmp, f"sqlite:///{tmp / 'nubis.db'}")
    platform.hosts.add(platform.db, "fake", "test:///default")
    app = create_app(platform, manage_lifecycle=False)
    tokens = {}
    with TestClient(app) as client:
        for user in ("admin", "security"):
            password = (platform.settings.data_dir / f"{user}-password").read_text().strip()
            resp = client.post(f"{API}/auth/tokens", json={"username": user, "password": password})
            tokens[user] = resp.json()["token"]
    yield app, tokens
    platform.stop()


def caller(tokens: dict[str, str], method: str, path: str) -> str:
    """The token of an administrator the policy lets call the operation (so requests
    reach its handler, not the policy's 403)."""
    allowed = policy.POLICY.get(policy.action_key(method, path.removeprefix(API)), frozenset())
    return tokens["security"] if policy.SECURITY_ADMIN in allowed else tokens["admin"]


def test_no_server_errors(fuzzed):
    app, tokens = fuzzed
    schema = schemathesis.openapi.from_asgi(f"{API}/openapi.json", app)
    errors: list[str] = []
    statuses: list[int] = []
    for found in schema.get_all_operations():
        operation = found.ok()
        method = operation.method.upper()
        if (method, operation.path) in LEFT_OUT:
            continue
        token = caller(tokens, method, operation.path)
        for mode in GenerationMode:  # data the schema allows, then data it does not

            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(mode))
            def call(case) -> None:  # noqa: ANN001
                # the administrator's token replaces any generated Authorization header
                # (call() runs at once, in this iteration: the token is this operation's)
                bearer = f"Bearer {token}"  # noqa: B023
                case.headers = {**(case.headers or {}), "Authorization": bearer}
                response = case.call()
                statuses.append(response.status_code)
                if response.status_code >= 500:
                    errors.append(
                        f"{case.method} {case.formatted_path} {case.query} {case.body!r:.200}: "
                        f"{response.status_code} {response.text[:300]}"
                    )

            try:
                call()
            except Unsatisfiable:  # nothing of the operation can be made invalid
                assert mode is GenerationMode.NEGATIVE
    assert len(statuses) >= 800
    let_in = [code for code in statuses if code not in (401, 403)]
    assert len(let_in) > 0.9 * len(statuses), f"only {len(let_in)} of {len(statuses)} let in"
    assert errors == []
