"""The `nubis` CLI against a real server: login, host/image/flavor lists, an instance."""

import json
import os
import subprocess
import tempfile

import pytest

from tests.integration.server import READY, cli_runner, libvirt_leftovers

pytestmark = pytest.mark.integration


@pytest.fixture
def nubis(server, tmp_path):
    run = cli_runner(server, tmp_path / "token")
    password = (server.data_dir / "admin-password").read_text().strip()
    run("login", "--username", "admin", "--password", password)
    assert (tmp_path / "token").stat().st_mode & 0o077 == 0
    return run


def test_cli_creates_boots_and_deletes_an_instance(nubis, tmp_path):
    hosts = json.loads(nubis("host", "list", "-f", "json").stdout)
    assert [h["name"] for h in hosts["items"]] == ["local"]
    assert "nubis-tiny" in nubis("image", "list").stdout
    assert "m1.tiny" in nubis("flavor", "list").stdout

    # a generated key pair: the private key goes to a file only its owner reads
    key_file = tmp_path / "cli-key"
    nubis("keypair", "create", "cli-key", "--private-key-file", str(key_file))
    assert key_file.stat().st_mode & 0o077 == 0
    public = subprocess.run(
        ["ssh-keygen", "-y", "-f", str(key_file)], capture_output=True, text=True, check=True
    ).stdout.split()
    shown = json.loads(nubis("keypair", "show", "cli-key", "-f", "json").stdout)
    assert shown["public_key"].split()[:2] == public[:2]
    refused = nubis("keypair", "create", "cli-key", "--private-key-file", str(key_file), ok=False)
    assert refused.returncode != 0 and "not overwriting" in refused.stderr
    user_data = tmp_path / "user-data"
    user_data.write_text("#!/bin/sh\necho CLI-USER-DATA $(hostname)\n")

    out = nubis(
        "instance", "create", "cli-vm", "--image", "nubis-tiny", "--flavor", "m1.tiny",
        "--key-pair", "cli-key", "--user-data", str(user_data), "--wait", "-f", "json",
    ).stdout  # fmt: skip
    inst = json.loads(out)
    assert inst["status"] == "running" and inst["key_name"] == "cli-key"
    nubis("instance", "properties", "cli-vm", "--set", "role=web", "--set", "tier=1")
    props = nubis("instance", "properties", "cli-vm", "--unset", "tier", "-f", "json").stdout
    assert json.loads(props) == [{"key": "role", "value": "web"}]
    refused = nubis("instance", "properties", "cli-vm", "--set", "novalue", ok=False)
    assert refused.returncode != 0 and "KEY=VALUE" in refused.stderr
    listed = json.loads(nubis("instance", "list", "--status", "running", "-f", "json").stdout)
    assert "cli-vm" in [i["name"] for i in listed["items"]]

    nubis("instance", "stop", "cli-vm", "--wait")
    assert (
        json.loads(nubis("instance", "show", "cli-vm", "-f", "json").stdout)["status"] == "stopped"
    )
    nubis("instance", "start", "cli-vm", "--wait")
    for _ in range(120):
        log = nubis("instance", "console-log", "cli-vm").stdout
        if READY in log and "CLI-USER-DATA cli-vm" in log:
            break
    else:
        pytest.fail(f"guest never printed its marker and the user-data's output: {log[-1500:]}")
    nubis("instance", "delete", "cli-vm", "--wait")
    assert libvirt_leftovers(inst["id"]) == []

    # importing a public key; the list shows both
    pub_file = tmp_path / "imported.pub"
    pub_file.write_text(" ".join(public) + "\n")
    nubis("keypair", "create", "cli-imported", "--public-key-file", str(pub_file))
    listed = nubis("keypair", "list").stdout
    assert "cli-key" in listed and "cli-imported" in listed
    for name in ("cli-key", "cli-imported"):
        nubis("keypair", "delete", name)
    assert "cli-key" not in nubis("keypair", "list").stdout


def test_cli_reports_errors_clearly(nubis, tmp_path):
    bad = nubis("instance", "create", "x", "--image", "nope", "--flavor", "m1.tiny", ok=False)
    assert bad.returncode == 1
    assert "image 'nope' not found (HTTP 404)" in bad.stderr
    evil = tmp_path / "evil.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-f", "qcow2", "-b", "/etc/passwd", "-F", "raw", str(evil)],
        check=True,
        capture_output=True,
    )
    refused = nubis("image", "import", str(evil), "evil", ok=False)
    assert refused.returncode == 1 and "backing file" in refused.stderr


def test_cli_inventory_capacity_and_rule_groups(nubis):
    assert "default" in nubis("zone", "list").stdout
    [me] = json.loads(nubis("controller", "list", "-f", "json").stdout)  # the one server
    assert me["alive"] and me["this"], me
    assert "running_tasks" in nubis("controller", "list").stdout
    clusters = json.loads(nubis("cluster", "list", "-f", "json").stdout)
    assert [c["name"] for c in clusters["items"]] == ["default"]
    cap = json.loads(nubis("cluster", "capacity", "default", "-f", "json").stdout)
    assert cap["hosts"] == 1 and cap["vcpus"]["overcommitted"] == cap["vcpus"]["physical"] * 3
    table = nubis("host", "capacity", "local").stdout
    assert "overcommitted" in table and "memory_mib" in table
    nubis("zone", "create", "dc2")
    made = json.loads(
        nubis("cluster", "create", "gold", "--zone", "dc2", "--cpu-ratio", "2", "-f", "json").stdout
    )
    assert made["cpu_ratio"] == 2.0
    group = json.loads(
        nubis("rule-group", "create", "web", "--policy", "anti-affinity", "-f", "json").stdout
    )
    assert group["strict"] is True
    bad = nubis("rule-group", "create", "x", "--policy", "sideways", ok=False)
    assert bad.returncode == 1 and "policy must be one of" in bad.stderr
    assert json.loads(nubis("host", "disable", "local", "-f", "json").stdout)["enabled"] is False
    assert json.loads(nubis("host", "enable", "local", "-f", "json").stdout)["enabled"] is True


def test_cli_manages_pools_offerings_and_volumes(nubis):
    path = tempfile.mkdtemp(prefix="nubis-cli-pool-", dir="/var/tmp")
    os.chmod(path, 0o755)
    nubis(
        "pool",
        "create",
        "cli-pool",
        "--kind",
        "dir",
        "--path",
        path,
        "--host",
        "local",
        "--tag",
        "fast",
    )
    pools = json.loads(nubis("pool", "list", "-f", "json").stdout)["items"]
    assert [p["state"] for p in pools if p["name"] == "cli-pool"] == ["active"]
    nubis(
        "disk-offering",
        "create",
        "fast-2g",
        "--size-gib",
        "2",
        "--tag",
        "fast",
        "--provisioning",
        "thick-lazy-zeroed",
        "--disk-format",
        "raw",
    )
    nubis("volume", "create", "cli-vol", "--offering", "fast-2g", "--wait")
    vol = json.loads(nubis("volume", "show", "cli-vol", "-f", "json").stdout)
    assert (vol["size_gib"], vol["format"], vol["status"]) == (2, "raw", "available")
    assert vol["pool_id"] == next(p["id"] for p in pools if p["name"] == "cli-pool")
    bad = nubis("volume", "extend", "cli-vol", "1", ok=False)
    assert bad.returncode != 0 and "never shrink" in bad.stderr + bad.stdout
    nubis("volume", "extend", "cli-vol", "3", "--wait")
    assert json.loads(nubis("volume", "show", "cli-vol", "-f", "json").stdout)["size_gib"] == 3
    held = nubis("pool", "delete", "cli-pool", ok=False)
    assert held.returncode != 0 and "still holds 1 volume" in held.stderr + held.stdout
    nubis("volume", "delete", "cli-vol", "--wait")
    nubis("disk-offering", "delete", "fast-2g")

    # a flavor whose instances' root disks go to the pool, which it then holds; a
    # host's pool is no cluster's root pool
    flavor = json.loads(
        nubis(
            "flavor", "create", "cli-flavor", "--vcpus", "1", "--memory-mib", "128",
            "--disk-gib", "1", "--root-pool", "cli-pool", "-f", "json",
        ).stdout
    )  # fmt: skip
    assert flavor["root_pool_id"] == next(p["id"] for p in pools if p["name"] == "cli-pool")
    held = nubis("pool", "delete", "cli-pool", ok=False)
    assert held.returncode != 0 and "flavor cli-flavor" in held.stderr + held.stdout
    bad = nubis("cluster", "root-pool", "default", "cli-pool", ok=False)
    assert bad.returncode != 0 and "not a pool of cluster" in bad.stderr + bad.stdout
    cleared = json.loads(nubis("cluster", "root-pool", "default", "", "-f", "json").stdout)
    assert cleared["root_pool_id"] is None
    nubis("flavor", "delete", "cli-flavor")
    assert "cli-flavor" not in nubis("flavor", "list").stdout
    nubis("pool", "delete", "cli-pool")
    assert os.listdir(path) == []
    os.rmdir(path)


def test_cli_manages_networks_security_groups_and_nics(nubis, server):
    """No guest boots here (the network tests do that): the commands reach the API
    and show what it answers; an instance's NIC is created with its address."""
    made = json.loads(
        nubis(
            "network", "create", "cli-net", "--mode", "isolated",
            "--subnet", "10.236.0.0/24,pool=10.236.0.10-10.236.0.20,dns=10.236.0.1",
            "-f", "json",
        ).stdout
    )  # fmt: skip
    assert made["subnets"][0]["pool_start"] == "10.236.0.10" and made["state"] == "active"
    assert "10.236.0.0/24" in nubis("network", "list").stdout
    bad = nubis("network", "create", "cli-bad", "--subnet", "10.236.0.0/33", ok=False)
    assert bad.returncode != 0 and "not a network" in bad.stderr + bad.stdout

    nubis("security-group", "create", "cli-web")
    rule = json.loads(
        nubis(
            "security-group", "add-rule", "cli-web", "--protocol", "tcp", "--port", "80-81",
            "--remote-cidr", "10.236.0.0/24", "-f", "json",
        ).stdout
    )  # fmt: skip
    assert (rule["port_min"], rule["port_max"], rule["remote_cidr"]) == (80, 81, "10.236.0.0/24")
    assert "10.236.0.0/24" in nubis("security-group", "show", "cli-web").stdout

    inst = json.loads(
        nubis(
            "instance", "create", "cli-nic", "--image", "nubis-tiny", "--flavor", "m1.tiny",
            "--network", "cli-net=10.236.0.15", "--security-group", "cli-web", "--wait",
            "-f", "json",
        ).stdout
    )  # fmt: skip
    assert "10.236.0.15" in nubis("instance", "ports", "cli-nic").stdout
    in_use = nubis("security-group", "delete", "cli-web", ok=False)
    assert in_use.returncode != 0
    nubis("instance", "delete", inst["id"], "--wait")
    nubis("security-group", "delete-rule", "cli-web", rule["id"])
    nubis("security-group", "delete", "cli-web")
    nubis("network", "delete", "cli-net")
    assert "cli-net" not in nubis("network", "list").stdout
    # the default group was never used here; it goes so no filter is left on the host
    for group in server.client.get("/security-groups").json()["items"]:
        assert server.client.delete(f"/security-groups/{group['id']}").status_code == 204
