"""Identity end to end: a real server, the `nubis` CLI as three different people.

The security administrator makes a project and a user; the user works in it with a
token, then with an API key (the CLI signs every request, a streamed upload too);
the system administrator sets a quota that stops the user; the auditor finds it all
in the exported audit log.
"""

import json
import os
import re
import subprocess
import sys

import pytest

from tests.integration.server import cli_runner

pytestmark = pytest.mark.integration
PASSWORD = "a-long-enough-passphrase"


@pytest.fixture
def as_user(server, tmp_path):
    """The CLI as one person: its own token file, and extra environment."""
    return lambda name, **env: cli_runner(server, tmp_path / f"token-{name}", **env)


def bootstrap_password(server, user: str) -> str:
    return (server.data_dir / f"{user}-password").read_text().strip()


def test_projects_roles_keys_quotas_and_audit_through_the_cli(server, as_user, tmp_path):
    security = as_user("security", NUBIS_NEW_PASSWORD=PASSWORD)
    security(
        "login", "--username", "security", "--password", bootstrap_password(server, "security")
    )
    security("project", "create", "team")
    security("user", "create", "alice")
    asked = security("user", "create", "audrey", "--system-role", "auditor")
    assert "waiting for a second security administrator" in asked.stdout
    # the only security administrator cannot approve it; the server itself can
    approval = re.search(r"approval (\S+) ", asked.stdout).group(1)
    refused = security("user", "approve", approval, ok=False)
    assert "second security administrator" in refused.stderr
    assert approval in security("user", "approvals").stdout
    on_server = subprocess.run(
        [sys.executable, "-m", "nubis.cli.main", "server", "approve", approval],
        env={**os.environ, "NUBIS_DATA_DIR": str(server.data_dir)},
        capture_output=True,
        text=True,
    )
    assert on_server.returncode == 0 and "approved" in on_server.stdout, on_server.stderr
    security("role", "grant", "alice", "member", "--project", "team")
    refused = security("instance", "list", ok=False)
    assert "may not" in refused.stderr and "403" in refused.stderr

    alice = as_user("alice")
    alice("login", "--username", "alice", "--password", PASSWORD, "--project", "team")
    me = json.loads(alice("whoami", "-f", "json").stdout)
    assert me["roles"] == ["member"] and me["username"] == "alice"
    key = json.loads(alice("apikey", "create", "robot", "-f", "json").stdout)

    robot = as_user("robot", NUBIS_API_KEY=key["id"], NUBIS_API_SECRET=key["secret"])
    robot("keypair", "create", "k1", "--private-key-file", str(tmp_path / "k1"))
    assert [k["name"] for k in json.loads(robot("keypair", "list", "-f", "json").stdout)] == ["k1"]
    image = tmp_path / "small.qcow2"
    subprocess.run(["qemu-img", "create", "-f", "qcow2", str(image), "16M"], check=True)
    robot("image", "import", str(image), "team-img")  # streamed: UNSIGNED-PAYLOAD
    assert "team-img" in alice("image", "list").stdout
    admin = as_user("admin")
    admin("login", "--username", "admin", "--password", bootstrap_password(server, "admin"))
    assert "team-img" in admin("image", "list").stdout  # the system administrator sees all
    alice("apikey", "revoke", key["id"])
    revoked = robot("keypair", "list", ok=False)
    assert "revoked" in revoked.stderr and "401" in revoked.stderr

    admin("quota", "set", "team", "instances=0")
    over = alice("instance", "create", "vm", "--image", "team-img", "--flavor", "m1.tiny", ok=False)
    assert "quota exceeded" in over.stderr
    quotas = json.loads(alice("quota", "show", "-f", "json").stdout)["quotas"]
    assert quotas["instances"] == {"limit": 0, "in_use": 0}

    audrey = as_user("audrey")
    audrey("login", "--username", "audrey", "--password", PASSWORD)
    export = tmp_path / "audit.jsonl"
    audrey("audit", "export", "--as", "json", "-o", str(export))
    records = [json.loads(line) for line in export.read_text().splitlines()]
    signed = [r for r in records if r["api_key_id"] == key["id"]]
    assert {r["action"] for r in signed} == {"POST /key-pairs", "POST /images"}
    assert all(r["username"] == "alice" and r["success"] for r in signed)
    refused_create = [r for r in records if r["action"] == "POST /instances"]
    assert [(r["username"], r["status_code"]) for r in refused_create][-1] == ("alice", 409)
    assert not any(PASSWORD in json.dumps(r) for r in records)
    assert audrey("instance", "list", ok=False).returncode != 0

    # leave nothing behind: the project goes once it is empty
    alice("keypair", "delete", "k1")
    alice("image", "delete", "team-img")
    admin("quota", "set", "team", "instances=20")
    security("project", "delete", "team")
    assert "team" not in security("project", "list").stdout
