"""docs/devcluster.md's commands, run as written (with this test's own base directory
and address slot): the devcluster comes up, its hosts are registered through the
API, an instance runs on dev-2, a host is killed and revived, everything goes."""

import json

import pytest

from tests.integration.server import cli_runner, devcluster_slot, serving

pytestmark = pytest.mark.integration
ROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with serving(tmp_path_factory, NUBIS_HA_CHECK_INTERVAL_SECONDS="1") as srv:
        yield srv


def test_the_documented_devcluster_commands(server, tmp_path):
    base = str(tmp_path / "dc")
    # as root at a login shell: the daemons (virtlogd, libvirtd) are in the sbin folders
    nubis = cli_runner(server, tmp_path / "token", PATH=ROOT_PATH)
    password = (server.data_dir / "admin-password").read_text().strip()
    nubis("login", "--username", "admin", "--password", password)
    with devcluster_slot() as offset:
        try:
            up = nubis("devcluster", "up", "--hosts", "2", "--base", base, "--offset", str(offset))
            assert "hosts registered in cluster devcluster" in up.stdout, up.stdout
            status = json.loads(nubis("devcluster", "status", "--base", base, "-f", "json").stdout)
            assert [(h["name"], h["running"]) for h in status] == [("dev-1", True), ("dev-2", True)]
            hosts = {h["name"]: h for h in server.client.get("/hosts").json()["items"]}
            cluster = server.client.get("/clusters/devcluster").json()
            assert hosts["dev-2"]["state"] == "up"
            assert hosts["dev-2"]["cluster_id"] == cluster["id"]
            nubis(
                "instance", "create", "vm1", "--image", "nubis-tiny", "--flavor", "m1.tiny",
                "--host", "dev-2", "--wait",
            )  # fmt: skip
            vm = server.instance("vm1")
            assert vm["host_id"] == hosts["dev-2"]["id"] and vm["status"] == "running"
            nubis("instance", "delete", "vm1", "--wait")
            nubis("devcluster", "kill-host", "dev-2", "--base", base)
            server.wait_field("/hosts/dev-2", "state", "unreachable", timeout=30)
            nubis("devcluster", "revive-host", "dev-2", "--base", base)
            server.wait_field("/hosts/dev-2", "state", "up", timeout=60)
        finally:
            for name in ("dev-1", "dev-2"):  # the hosts leave Nubis before they go
                server.client.delete(f"/hosts/{name}")
            nubis("devcluster", "down", "--base", base, "--purge")
    status = json.loads(nubis("devcluster", "status", "--base", base, "-f", "json").stdout)
    assert not any(h["running"] for h in status)
