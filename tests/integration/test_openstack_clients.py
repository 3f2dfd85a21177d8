"""The standard OpenStack clients against a running Nubis: the `openstack` CLI
(python-openstackclient) and openstacksdk, each result checked in Nubis's own API."""

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import openstack
import pytest

from tests.integration.server import READY
from tests.integration.storage import wait_guest

pytestmark = pytest.mark.integration

OPENSTACK = str(Path(sys.executable).parent / "openstack")
CIDR = "10.213.7.0/24"


def clouds_env(server, tmp_path) -> dict[str, str]:
    """A clouds.yaml as docs/openstack.md shows it, and the environment selecting it."""
    password = (server.data_dir / "admin-password").read_text().strip()
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(
        "clouds:\n"
        "  nubis:\n"
        "    auth:\n"
        f"      auth_url: {server.url}/openstack/identity/v3\n"
        "      username: admin\n"
        f"      password: {password}\n"
        "      project_name: admin\n"
        "      user_domain_name: Default\n"
        "      project_domain_name: Default\n"
        "    identity_api_version: 3\n"
        f"    cacert: {server.ca_file}\n"
    )
    return {
        "OS_CLIENT_CONFIG_FILE": str(clouds),
        "OS_CLOUD": "nubis",
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
    }


@pytest.fixture(scope="module")
def os_cli(server, pool, tmp_path_factory):
    """``os_cli(*args)``: the `openstack` CLI against ``server``; JSON output parsed."""
    env = clouds_env(server, tmp_path_factory.mktemp("osc"))

    def run(*args: str, ok: bool = True, parse: bool = True):
        proc = subprocess.run(
            [OPENSTACK, *args, *(["-f", "json"] if parse and ok else [])],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if not ok:
            assert proc.returncode != 0, proc.stdout
            return proc
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout) if parse and proc.stdout.strip() else proc.stdout

    run.env = env
    return run


@pytest.fixture(scope="module")
def network(server, os_cli):
    """os-net, made as a Neutron user makes one: the network (``local``: a Nubis isolated
    network), then its subnet; removed the same way."""
    made = os_cli("network", "create", "--provider-network-type", "local", "os-net")
    assert (made["status"], made["subnets"]) == ("ACTIVE", [])
    assert server.client.get("/networks/os-net").json()["state"] == "empty"
    subnet = os_cli("subnet", "create", "--network", "os-net", "--subnet-range", CIDR, "os-sub")
    assert (subnet["cidr"], subnet["gateway_ip"]) == (CIDR, CIDR.replace("0/24", "1"))
    native = server.client.get("/networks/os-net").json()
    assert (native["id"], native["mode"], native["state"]) == (made["id"], "isolated", "active")
    assert [(s["id"], s["name"]) for s in native["subnets"]] == [(subnet["id"], "os-sub")]
    yield native
    os_cli("subnet", "delete", "os-sub", parse=False)
    assert server.client.get("/networks/os-net").json()["state"] == "empty"
    os_cli("network", "delete", "os-net", parse=False)
    assert server.client.get("/networks/os-net").status_code == 404


def test_catalog_flavors_images_and_key_pairs(server, os_cli, tmp_path):
    token = os_cli("token", "issue")
    # the Keystone token is a Nubis token for the same user and project
    who = httpx.get(
        f"{server.url}/api/v1/auth/whoami",
        headers={"Authorization": f"Bearer {token['id']}"},
        verify=str(server.ca_file),
    ).json()
    assert (who["username"], who["project_id"]) == ("admin", token["project_id"])
    services = {entry["Type"] for entry in os_cli("catalog", "list")}
    assert {"identity", "compute", "image", "network", "volumev3"} <= services
    quotas = {q["Resource"]: q["Limit"] for q in os_cli("quota", "show")}
    native_quotas = server.client.get("/quotas").json()["quotas"]
    assert (quotas["instances"], quotas["gigabytes"], quotas["networks"]) == (
        native_quotas["instances"]["limit"],
        native_quotas["volume_gib"]["limit"],
        native_quotas["networks"]["limit"],
    )
    limits = {row["Name"]: row["Value"] for row in os_cli("limits", "show", "--absolute")}
    assert (limits["max_total_instances"], limits["max_total_volumes"]) == (
        native_quotas["instances"]["limit"],
        native_quotas["volumes"]["limit"],
    )

    native_flavors = server.client.get("/flavors").json()["items"]
    flavors = {f["Name"]: f for f in os_cli("flavor", "list")}
    assert set(flavors) == {f["name"] for f in native_flavors}
    tiny = next(f for f in native_flavors if f["name"] == "m1.tiny")
    assert (flavors["m1.tiny"]["RAM"], flavors["m1.tiny"]["VCPUs"]) == (
        tiny["memory_mib"],
        tiny["vcpus"],
    )

    assert "nubis-tiny" in [i["Name"] for i in os_cli("image", "list")]
    disk = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True)
    made = os_cli("image", "create", "--file", str(disk), "--disk-format", "qcow2", "os-image")
    assert made["status"] == "active"
    native = server.client.get("/images/os-image").json()
    assert (native["id"], native["status"], native["disk_format"]) == (
        made["id"],
        "active",
        "qcow2",
    )
    assert native["sha256"] == hashlib.sha256(disk.read_bytes()).hexdigest()
    back = tmp_path / "back.qcow2"
    os_cli("image", "save", "--file", str(back), "os-image", parse=False)
    assert back.read_bytes() == disk.read_bytes()
    os_cli("image", "delete", "os-image", parse=False)
    assert server.client.get("/images/os-image").status_code == 404

    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "key")], check=True
    )
    public = (tmp_path / "key.pub").read_text().split()
    pair = os_cli("keypair", "create", "--public-key", str(tmp_path / "key.pub"), "os-key")
    assert pair["name"] == "os-key"
    native_key = server.client.get("/key-pairs/os-key").json()
    assert native_key["public_key"].split()[:2] == public[:2]
    os_cli("keypair", "create", "--private-key", str(tmp_path / "gen"), "os-gen", parse=False)
    shown = server.client.get("/key-pairs/os-gen").json()
    (tmp_path / "gen").chmod(0o600)  # the CLI leaves it readable to all; ssh-keygen refuses
    derived = subprocess.run(
        ["ssh-keygen", "-y", "-f", str(tmp_path / "gen")], capture_output=True, text=True
    ).stdout.split()
    assert shown["public_key"].split()[:2] == derived[:2]
    os_cli("keypair", "delete", "os-gen", parse=False)
    assert server.client.get("/key-pairs/os-gen").status_code == 404


def test_server_lifecycle_with_network_security_group_and_volume(server, os_cli, network, tmp_path):
    key = tmp_path / "vm-key"
    os_cli("keypair", "create", "--private-key", str(key), "os-vm-key", parse=False)
    group = os_cli("security", "group", "create", "os-web")
    rule = os_cli(
        "security", "group", "rule", "create", "--protocol", "tcp", "--dst-port", "22", "os-web"
    )
    native_group = server.client.get("/security-groups/os-web").json()
    assert native_group["id"] == group["id"]
    native_rule = next(r for r in native_group["rules"] if r["id"] == rule["id"])
    assert (native_rule["protocol"], native_rule["port_min"], native_rule["port_max"]) == (
        "tcp",
        22,
        22,
    )

    made = os_cli(
        "server", "create", "--flavor", "m1.tiny", "--image", "nubis-tiny",
        "--network", "os-net", "--key-name", "os-vm-key", "--security-group", "os-web",
        "--property", "role=web", "--wait", "os-vm1",
    )  # fmt: skip
    assert made["status"] == "ACTIVE"
    inst = server.instance("os-vm1")
    assert (inst["id"], inst["status"], inst["key_name"]) == (made["id"], "running", "os-vm-key")
    server.wait_console(inst["id"])
    assert inst["properties"] == {"role": "web"}
    os_cli("server", "set", "--property", "tier=1", "os-vm1", parse=False)
    os_cli("server", "unset", "--property", "role", "os-vm1", parse=False)
    assert server.instance("os-vm1")["properties"] == {"tier": "1"}
    ports = server.client.get(f"/instances/{inst['id']}/ports").json()
    assert [p["network_id"] for p in ports] == [network["id"]]
    assert made["addresses"] == {"os-net": [ports[0]["ip"]]}
    port = os_cli("port", "show", ports[0]["id"])
    assert (port["mac_address"], port["device_id"]) == (ports[0]["mac"], inst["id"])
    assert port["security_group_ids"] == [group["id"]]
    assert [p["ID"] for p in os_cli("port", "list", "--server", "os-vm1")] == [ports[0]["id"]]

    listed = {s["Name"]: s for s in os_cli("server", "list")}
    assert listed["os-vm1"]["Status"] == "ACTIVE"
    shown = os_cli("server", "show", "os-vm1")
    assert shown["security_groups"] == [{"name": "os-web"}]

    os_cli("server", "stop", "os-vm1", parse=False)
    server.wait_field(f"/instances/{inst['id']}", "status", "stopped", timeout=120)
    assert os_cli("server", "show", "os-vm1")["status"] == "SHUTOFF"
    # an image of the stopped server: there at once, active when made, bootable
    snap = os_cli("server", "image", "create", "--name", "os-snap", "--wait", "os-vm1")
    native_image = server.client.get("/images/os-snap").json()
    assert (native_image["id"], native_image["status"]) == (snap["id"], "active")
    assert os_cli("image", "show", "os-snap")["status"] == "active"
    os_cli("server", "start", "os-vm1", parse=False)
    server.wait_field(f"/instances/{inst['id']}", "status", "running", timeout=120)
    assert os_cli("server", "show", "os-vm1")["status"] == "ACTIVE"
    server.wait_console(inst["id"], count=2)  # booted again
    os_cli("server", "reboot", "--wait", "os-vm1", parse=False)
    server.wait_console(inst["id"], count=3)  # the guest rebooted
    os_cli("server", "reboot", "--hard", "--wait", "os-vm1", parse=False)
    server.wait_console(inst["id"], count=4)  # reset, booted again
    # suspended to disk and resumed: the same guest goes on, it does not boot again
    os_cli("server", "suspend", "os-vm1", parse=False)
    server.wait_field(f"/instances/{inst['id']}", "status", "suspended", timeout=120)
    assert os_cli("server", "show", "os-vm1")["status"] == "SUSPENDED"
    os_cli("server", "resume", "os-vm1", parse=False)
    server.wait_field(f"/instances/{inst['id']}", "status", "running", timeout=120)
    assert os_cli("server", "show", "os-vm1")["status"] == "ACTIVE"
    assert wait_guest(server, inst["id"], "echo alive", "alive") == "alive"
    assert server.console(inst["id"]).count(READY) == 4
    # resized in place: VERIFY_RESIZE until confirmed, the guest restarted bigger
    os_cli("server", "resize", "--flavor", "m1.small", "--wait", "os-vm1", parse=False)
    assert os_cli("server", "show", "os-vm1")["status"] == "VERIFY_RESIZE"
    resized = server.instance("os-vm1")
    assert (resized["memory_mib"], resized["disk_gib"]) == (512, 5)
    assert resized["resize_from"]["memory_mib"] == 128
    os_cli("server", "resize", "confirm", "os-vm1", parse=False)
    server.wait_field(f"/instances/{inst['id']}", "resize_from", None, timeout=120)
    assert os_cli("server", "show", "os-vm1")["status"] == "ACTIVE"
    server.wait_console(inst["id"], count=5)
    size = wait_guest(server, inst["id"], "cat /sys/block/vda/size", str(5 * 2**30 // 512))
    assert size == str(5 * 2**30 // 512)
    console = os_cli("console", "url", "show", "os-vm1")
    assert console["url"] == f"{server.url}/instances/{inst['id']}/console"
    hypervisors = os_cli("hypervisor", "list")
    assert [h["Hypervisor Hostname"] for h in hypervisors] == ["local"]

    volume = os_cli("volume", "create", "--size", "1", "os-vol")
    server.wait_field(f"/volumes/{volume['id']}", "status", "available", timeout=120)
    os_cli("server", "add", "volume", "os-vm1", "os-vol", parse=False)
    server.wait_field(f"/volumes/{volume['id']}", "status", "in-use", timeout=120)
    native_volume = server.client.get(f"/volumes/{volume['id']}").json()
    assert native_volume["task_state"] is None
    assert [a["instance_id"] for a in native_volume["attachments"]] == [inst["id"]]
    attached = os_cli("volume", "show", "os-vol")
    assert attached["attachments"][0]["server_id"] == inst["id"]
    device = attached["attachments"][0]["device"].removeprefix("/dev/")
    # the guest sees a 1 GiB disk there
    size = wait_guest(server, inst["id"], f"cat /sys/block/{device}/size", str(2**30 // 512))
    assert size == str(2**30 // 512)
    os_cli("server", "remove", "volume", "os-vm1", "os-vol", parse=False)
    server.wait_field(f"/volumes/{volume['id']}", "status", "available", timeout=120)
    assert wait_guest(server, inst["id"], f"ls /sys/block | grep -c {device}", "0") == "0"
    os_cli("volume", "delete", "os-vol", parse=False)

    os_cli("server", "delete", "--wait", "os-vm1", parse=False)
    assert server.client.get(f"/instances/{inst['id']}").status_code == 404
    os_cli("image", "delete", "os-snap", parse=False)
    assert server.client.get("/images/os-snap").status_code == 404
    wait_gone(server, f"/volumes/{volume['id']}")
    os_cli("security", "group", "delete", "os-web", parse=False)
    assert server.client.get("/security-groups/os-web").status_code == 404


def test_volume_types_and_snapshots(server, os_cli):
    """A volume type is a disk offering; a snapshot is a volume snapshot, and a volume
    made from it holds the same size."""
    made = server.client.post("/disk-offerings", json={"name": "os-gold", "format": "raw"})
    assert made.status_code == 201, made.text
    types = {t["Name"]: t["ID"] for t in os_cli("volume", "type", "list")}
    assert types["os-gold"] == made.json()["id"] and "__DEFAULT__" in types
    assert os_cli("volume", "type", "show", "os-gold")["id"] == made.json()["id"]

    volume = os_cli("volume", "create", "--size", "1", "--type", "os-gold", "os-typed")
    assert volume["type"] == "os-gold"
    native = server.wait_field(f"/volumes/{volume['id']}", "status", "available", timeout=120)
    assert (native["offering_id"], native["format"]) == (made.json()["id"], "raw")

    snap = os_cli("volume", "snapshot", "create", "--volume", "os-typed", "os-vsnap")
    path = f"/volumes/{volume['id']}/snapshots/{snap['id']}"
    server.wait_field(path, "status", "available", timeout=120)
    listed = os_cli("volume", "snapshot", "list")
    assert [(x["ID"], x["Status"]) for x in listed] == [(snap["id"], "available")]
    clone = os_cli("volume", "create", "--snapshot", "os-vsnap", "os-cloned")
    cloned = server.wait_field(f"/volumes/{clone['id']}", "status", "available", timeout=120)
    assert cloned["size_gib"] == 1
    # a volume holding an image's disk (the client finds the image in Glance)
    imaged = os_cli("volume", "create", "--image", "nubis-tiny", "--size", "1", "os-imaged")
    native_imaged = server.wait_field(
        f"/volumes/{imaged['id']}", "status", "available", timeout=120
    )
    assert native_imaged["size_gib"] == 1 and native_imaged["format"] == "qcow2"

    # a type that does not exist changes nothing
    refused = os_cli("volume", "create", "--size", "1", "--type", "no-such", "os-x", ok=False)
    assert "no-such" in refused.stderr
    os_cli("volume", "snapshot", "delete", "os-vsnap", parse=False)
    wait_gone(server, path)
    for name in ("os-cloned", "os-typed", "os-imaged"):
        os_cli("volume", "delete", name, parse=False)
    for made_id in (volume["id"], clone["id"], imaged["id"]):
        wait_gone(server, f"/volumes/{made_id}")
    assert server.client.delete("/disk-offerings/os-gold").status_code == 204
    assert not [v for v in server.client.get("/volumes").json()["items"] if v["name"] == "os-x"]


def test_volume_migrate_moves_it_to_the_pool_its_host_names(server, os_cli, pool):
    """``openstack volume migrate --host nubis@<pool>#<pool>``: the pool a volume is in
    shows as its backend host (to the administrator), and migrate moves it there."""
    target = "os-other"
    path = tempfile.mkdtemp(prefix="nubis-test-os-", dir="/var/tmp")
    os.chmod(path, 0o755)
    body = {"name": target, "kind": "dir", "path": path, "host": "local"}
    assert server.client.post("/storage-pools", json=body).status_code == 201
    made = server.client.post("/volumes", json={"name": "os-mover", "size_gib": 1,
                                                "pool": "local-dir"})  # fmt: skip
    assert made.status_code == 202, made.text
    vid = made.json()["id"]
    server.wait_field(f"/volumes/{vid}", "status", "available", timeout=120)
    shown = os_cli("volume", "show", "os-mover")
    assert shown["os-vol-host-attr:host"] == "nubis@local-dir#local-dir"
    refused = os_cli("volume", "migrate", "--host", "nubis@nope#nope", "os-mover", ok=False)
    assert "nope" in refused.stderr
    os_cli("volume", "migrate", "--host", f"nubis@{target}#{target}", "os-mover", parse=False)
    moved = server.wait_field(f"/volumes/{vid}", "task_state", None, timeout=120)
    assert moved["pool_id"] == server.client.get(f"/storage-pools/{target}").json()["id"]
    assert os_cli("volume", "show", "os-mover")["os-vol-host-attr:host"] == (
        f"nubis@{target}#{target}"
    )
    os_cli("volume", "delete", "os-mover", parse=False)
    wait_gone(server, f"/volumes/{vid}")
    assert server.client.delete(f"/storage-pools/{target}").status_code == 204
    assert os.listdir(path) == []
    os.rmdir(path)


def test_anti_affinity_server_group(server, os_cli):
    group = os_cli("server", "group", "create", "--policy", "anti-affinity", "os-spread")
    native = server.client.get("/rule-groups/os-spread").json()
    assert (native["id"], native["policy"], native["strict"]) == (
        group["id"],
        "anti-affinity",
        True,
    )
    first = os_cli(
        "server", "create", "--flavor", "m1.tiny", "--image", "nubis-tiny",
        "--server-group", "os-spread", "--wait", "os-g1",
    )  # fmt: skip
    assert server.client.get("/rule-groups/os-spread").json()["members"] == [first["id"]]
    # this machine is one host: a second member has nowhere to go, and is not made
    refused = os_cli(
        "server", "create", "--flavor", "m1.tiny", "--image", "nubis-tiny",
        "--server-group", "os-spread", "os-g2", ok=False,
    )  # fmt: skip
    assert "anti-affinity" in refused.stderr or "no host" in refused.stderr.lower()
    names = [i["name"] for i in server.client.get("/instances").json()["items"]]
    assert "os-g2" not in names
    assert os_cli("server", "group", "show", "os-spread")["members"] == [first["id"]]
    os_cli("server", "delete", "--wait", "os-g1", parse=False)
    os_cli("server", "group", "delete", "os-spread", parse=False)
    assert server.client.get("/rule-groups/os-spread").status_code == 404


def test_openstacksdk_pages_and_refusals(server, os_cli):
    conn = openstack.connect(**_sdk_auth(os_cli))
    names = [f.name for f in conn.compute.flavors(details=True, limit=1)]
    assert sorted(names) == sorted(f["name"] for f in server.client.get("/flavors").json()["items"])
    image = conn.image.find_image("nubis-tiny")
    assert image.status == "active" and image.disk_format == "qcow2"
    with pytest.raises(openstack.exceptions.NotFoundException):
        conn.compute.get_server("no-such-server")
    flavor = conn.compute.find_flavor("m1.tiny")
    # an action Nubis lacks is a clean 501, and changes nothing
    vm = conn.compute.create_server(
        name="os-sdk", flavor_id=flavor.id, image_id=image.id, networks="none"
    )
    vm = conn.compute.wait_for_server(vm, wait=180)
    with pytest.raises(openstack.exceptions.HttpException) as refused:
        conn.compute.rescue_server(vm)
    assert refused.value.status_code == 501
    assert server.instance(vm.id)["status"] == "running"
    # Nova's unpause is for a paused server, resume for a suspended one
    conn.compute.suspend_server(vm)
    conn.compute.wait_for_server(vm, status="SUSPENDED", wait=120)
    assert server.instance(vm.id)["status"] == "suspended"
    with pytest.raises(openstack.exceptions.ConflictException):
        conn.compute.unpause_server(vm)
    assert server.instance(vm.id)["status"] == "suspended"
    conn.compute.resume_server(vm)
    conn.compute.wait_for_server(vm, status="ACTIVE", wait=120)
    assert server.instance(vm.id)["status"] == "running"
    # a live migration needs another host: refused cleanly, the server stays put
    live = {"os-migrateLive": {"host": None, "block_migration": False, "disk_over_commit": False}}
    answer = conn.compute.post(f"/servers/{vm.id}/action", json=live)
    assert answer.status_code == 409 and "conflictingRequest" in answer.json()
    assert server.instance(vm.id)["status"] == "running"
    conn.compute.delete_server(vm)
    conn.compute.wait_for_delete(vm, wait=180)
    assert server.client.get(f"/instances/{vm.id}").status_code == 404


def wait_gone(server, path: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while server.client.get(path).status_code != 404:
        assert time.monotonic() < deadline, f"{path} is still there"
        time.sleep(0.5)


def _sdk_auth(os_cli) -> dict:
    text = Path(os_cli.env["OS_CLIENT_CONFIG_FILE"]).read_text()
    fields = dict(line.strip().split(": ", 1) for line in text.splitlines() if ": " in line.strip())
    return {
        "auth_url": fields["auth_url"],
        "username": fields["username"],
        "password": fields["password"],
        "project_name": fields["project_name"],
        "user_domain_name": "Default",
        "project_domain_name": "Default",
        "cacert": fields["cacert"],
    }


def nat_table(namespace: str) -> str:
    proc = subprocess.run(
        ["ip", "netns", "exec", namespace, "iptables-save", "-t", "nat"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return proc.stdout


def test_routers_floating_ips_and_port_forwarding(server, os_cli):
    """Neutron's L3 calls as the `openstack` CLI makes them, on this machine's libvirtd
    (one host: the router's namespace is made here, on a bridge the test makes as the
    external network's)."""
    bridge = "nubisosbrex"
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
    try:
        ext = os_cli(
            "network", "create", "--external", "--provider-network-type", "flat",
            "--provider-physical-network", bridge, "os-ext",
        )  # fmt: skip
        assert ext["router:external"] is True
        os_cli("subnet", "create", "--network", "os-ext", "--subnet-range", "198.51.100.0/24",
               "--no-dhcp", "--allocation-pool", "start=198.51.100.10,end=198.51.100.20",
               "os-ext-sub")  # fmt: skip
        assert server.client.get("/networks/os-ext").json()["mode"] == "external"
        os_cli("network", "create", "--provider-network-type", "vxlan", "os-vx")
        os_cli("subnet", "create", "--network", "os-vx", "--subnet-range", "10.219.0.0/24",
               "os-vx-sub")  # fmt: skip

        made = os_cli("router", "create", "os-r1")
        assert made["external_gateway_info"] is None
        os_cli("router", "set", "--external-gateway", "os-ext", "os-r1", parse=False)
        os_cli("router", "add", "subnet", "os-r1", "os-vx-sub", parse=False)
        shown = os_cli("router", "show", "os-r1")
        gateway = shown["external_gateway_info"]
        assert gateway["network_id"] == ext["id"] and gateway["enable_snat"] is True
        native = server.client.get("/routers/os-r1").json()
        assert native["host_name"] == "local" and native["gateway_ip"].startswith("198.51.100.")
        assert [p["network_id"] for p in native["interfaces"]] == [
            server.client.get("/networks/os-vx").json()["id"]
        ]
        namespace = native["namespace"]
        assert f"--to-source {native['gateway_ip']}" in nat_table(namespace)

        made = os_cli(
            "server", "create", "--flavor", "m1.tiny", "--image", "nubis-tiny",
            "--network", "os-vx", "--wait", "os-vm-l3",
        )  # fmt: skip
        (port,) = server.client.get(f"/instances/{made['id']}/ports").json()

        fip = os_cli("floating", "ip", "create", "os-ext")
        assert fip["floating_ip_address"].startswith("198.51.100.")
        os_cli("floating", "ip", "set", "--port", port["id"], fip["id"], parse=False)
        shown = os_cli("floating", "ip", "show", fip["id"])
        assert (shown["port_id"], shown["fixed_ip_address"]) == (port["id"], port["ip"])
        assert shown["router_id"] == native["id"]
        rule = f"-d {fip['floating_ip_address']}/32 -j DNAT --to-destination {port['ip']}"
        assert rule in nat_table(namespace)

        # a floating IP carries a port forwarding, or is associated: not both
        refused = os_cli(
            "floating", "ip", "port", "forwarding", "create", "--internal-ip-address",
            port["ip"], "--port", port["id"], "--internal-protocol-port", "22",
            "--external-protocol-port", "2222", "--protocol", "tcp", fip["id"], ok=False,
        )  # fmt: skip
        assert "associated" in refused.stderr
        fwd_ip = os_cli("floating", "ip", "create", "os-ext")
        fwd = os_cli(
            "floating", "ip", "port", "forwarding", "create", "--internal-ip-address",
            port["ip"], "--port", port["id"], "--internal-protocol-port", "22",
            "--external-protocol-port", "2222", "--protocol", "tcp", fwd_ip["id"],
        )  # fmt: skip
        assert (fwd["external_port"], fwd["internal_port"]) == (2222, 22)
        listed = os_cli("floating", "ip", "port", "forwarding", "list", fwd_ip["id"])
        assert [f["ID"] for f in listed] == [fwd["id"]]
        rule = f"--dport 2222 -j DNAT --to-destination {port['ip']}:22"
        assert rule in nat_table(namespace)
        os_cli("floating", "ip", "port", "forwarding", "delete", fwd_ip["id"], fwd["id"],
               parse=False)  # fmt: skip
        assert rule not in nat_table(namespace)

        os_cli("floating", "ip", "unset", "--port", fip["id"], parse=False)
        assert server.client.get(f"/floating-ips/{fip['id']}").json()["fixed_port_id"] is None
        assert fip["floating_ip_address"] not in nat_table(namespace)
        os_cli("floating", "ip", "delete", fip["id"], fwd_ip["id"], parse=False)
        assert server.client.get("/floating-ips").json()["items"] == []

        os_cli("server", "delete", "--wait", "os-vm-l3", parse=False)
        os_cli("router", "remove", "subnet", "os-r1", "os-vx-sub", parse=False)
        os_cli("router", "unset", "--external-gateway", "os-r1", parse=False)
        assert os_cli("router", "show", "os-r1")["external_gateway_info"] is None
        os_cli("router", "delete", "os-r1", parse=False)
        assert server.client.get("/routers/os-r1").status_code == 404
        assert (
            namespace
            not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        )
        for name in ("os-vx-sub", "os-ext-sub"):
            os_cli("subnet", "delete", name, parse=False)
        for name in ("os-vx", "os-ext"):
            os_cli("network", "delete", name, parse=False)
    finally:
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)
