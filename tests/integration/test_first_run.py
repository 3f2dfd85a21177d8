"""A new user's first steps, as the README and docs/quickstart.md give them, on a
fresh install: the CLI on the server's machine trusts the server's own certificate
with no flag; elsewhere it pins the certificate by the fingerprint `nubis serve`
printed. The first run made a storage pool and a NAT network, so the first VM has
an address and the first volume attaches; removed, they stay removed."""

import os
import shutil
import tempfile

import pytest

from nubis import tls
from tests.integration.guest import dhcp_address, guest_run
from tests.integration.server import cli_runner, libvirt_leftovers, serving
from tests.integration.storage import wait_guest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pool_dir():
    path = tempfile.mkdtemp(prefix="nubis-first-run-", dir="/var/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory, pool_dir):
    with serving(
        tmp_path_factory, NUBIS_FIRST_RUN_DEFAULTS="1", NUBIS_DEFAULT_POOL_PATH=pool_dir
    ) as srv:
        yield srv
        # the defaults go, whatever the tests did (the first test removes them itself)
        srv.client.delete("/networks/default")
        srv.client.delete("/storage-pools/default")


def test_first_vm_has_an_address_and_first_volume_attaches(server, tmp_path, pool_dir):
    # on the server's machine: no CA flag, the CLI finds the certificate nubis serve made
    nubis = cli_runner(
        server, tmp_path / "token", NUBIS_CA_FILE="", NUBIS_DATA_DIR=str(server.data_dir)
    )
    password = (server.data_dir / "admin-password").read_text().strip()
    nubis("login", "--username", "admin", "--password", password)
    assert "local" in nubis("host", "list").stdout
    pools = server.client.get("/storage-pools").json()["items"]
    assert [(p["name"], p["state"], p["path"]) for p in pools] == [("default", "active", pool_dir)]
    nets = server.client.get("/networks").json()["items"]
    assert [(n["name"], n["mode"], n["state"]) for n in nets] == [("default", "nat", "active")]

    nubis("instance", "create", "vm1", "--image", "nubis-tiny", "--flavor", "m1.tiny", "--wait")
    vm = server.instance("vm1")
    ports = server.client.get(f"/instances/{vm['id']}/ports").json()
    assert len(ports) == 1 and ports[0]["network_id"] == nets[0]["id"]
    server.wait_console(vm["id"])
    assert dhcp_address(server, vm["id"]) == ports[0]["ip"]

    nubis("volume", "create", "data1", "--size-gib", "1", "--wait")
    nubis("volume", "attach", "data1", "--instance", "vm1", "--wait")
    vol = server.client.get("/volumes/data1").json()
    assert vol["pool_id"] == pools[0]["id"]
    serial = vol["attachments"][0]["serial"]
    assert wait_guest(server, vm["id"], "cat /sys/block/vdb/serial", serial) == serial
    assert guest_run(server, vm["id"], "cat /sys/block/vdb/size").strip() == str(2 * 1024**2)

    nubis("volume", "detach", "data1", "--instance", "vm1", "--wait")
    nubis("volume", "delete", "data1", "--wait")
    nubis("instance", "delete", "vm1", "--wait")
    assert libvirt_leftovers(vm["id"]) == []

    # the defaults are visible and removable, and stay removed after a restart
    nubis("network", "delete", "default")
    nubis("pool", "delete", "default")
    server.restart()
    assert server.client.get("/networks").json()["total"] == 0
    assert server.client.get("/storage-pools").json()["total"] == 0
    assert os.listdir(pool_dir) == []


def test_the_cli_pins_the_servers_certificate_by_its_fingerprint(server, tmp_path):
    printed = tls.fingerprint(server.ca_file.read_bytes())  # what nubis serve printed
    log = server.log_path.read_text()
    assert f"SHA-256 fingerprint {printed}" in log
    password = (server.data_dir / "admin-password").read_text().strip()
    # another machine: neither the CA file nor the data directory
    away = {"NUBIS_CA_FILE": "", "NUBIS_DATA_DIR": str(tmp_path / "elsewhere")}
    nubis = cli_runner(server, tmp_path / "cfg" / "token", **away)
    unknown = nubis("login", "--username", "admin", "--password", password, ok=False)
    assert unknown.returncode != 0 and "certificate" in unknown.stderr.lower()
    wrong = "00:" * 31 + "00"
    refused = nubis(
        "login", "--username", "admin", "--password", password, "--fingerprint", wrong, ok=False
    )
    assert refused.returncode != 0 and "not trusted" in refused.stderr
    assert not (tmp_path / "cfg" / "token").exists()  # no password was sent
    nubis("login", "--username", "admin", "--password", password, "--fingerprint", printed)
    assert "local" in nubis("host", "list").stdout  # verified against the pinned one
