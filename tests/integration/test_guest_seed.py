"""Key pairs and cloud-init seed discs with real guests: the tiny guest reads its seed
disc at boot as cloud-init does (NoCloud and ConfigDrive), takes the host name, lists
the public key it was given and runs the user-data script, whose output lands in the
console log. Bad input is refused and leaves nothing behind."""

from __future__ import annotations

import re
import time

import libvirt
import pytest

from tests.integration.guest import guest_run
from tests.integration.server import libvirt_leftovers

pytestmark = pytest.mark.integration

SCRIPT = '#!/bin/sh\necho "USERDATA-RAN uid=$(id -u) host=$(hostname)"\n'


def wait_for(server, iid: str, pattern: str, timeout: float = 120) -> re.Match:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(pattern, server.console(iid))
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"{pattern!r} not on the console: {server.console(iid)[-1500:]}")


def create(server, **body) -> dict:
    resp = server.client.post(
        "/instances", json={"image": "nubis-tiny", "flavor": "m1.tiny"} | body
    )
    assert resp.status_code == 202, resp.text
    inst = resp.json()
    assert server.wait_task(inst["task_id"])["status"] == "succeeded"
    return inst


def delete(server, inst: dict) -> None:
    resp = server.client.delete(f"/instances/{inst['id']}")
    assert resp.status_code == 202, resp.text
    assert server.wait_task(resp.json()["task_id"])["status"] == "succeeded"
    assert libvirt_leftovers(inst["id"]) == []  # the seed disc went with the root disk


def test_guests_take_host_name_key_and_user_data_from_their_seed_disc(server):
    resp = server.client.post("/key-pairs", json={"name": "laptop"})
    assert resp.status_code == 201, resp.text
    pair = resp.json()
    assert pair["private_key"].startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert pair["fingerprint"].startswith("SHA256:")
    shown = server.client.get("/key-pairs/laptop").json()
    assert "private_key" not in shown and shown["public_key"] == pair["public_key"]

    resp = server.client.post(
        "/networks",
        json={"name": "seed-net", "mode": "nat", "subnets": [{"cidr": "10.237.0.0/24"}]},
    )
    assert resp.status_code == 201, resp.text
    net = resp.json()
    nocloud = create(
        server,
        name="seed-a",
        hostname="web-7.example.org",
        key_pair="laptop",
        user_data=SCRIPT,
        networks=[{"network": "seed-net", "ip": "10.237.0.20"}],
    )
    configdrive = create(server, name="Seed_B", seed_format="configdrive", user_data=SCRIPT)
    assert nocloud["hostname"] == "web-7.example.org" and nocloud["key_name"] == "laptop"
    assert configdrive["hostname"] == "seed-b" and configdrive["seed_format"] == "configdrive"

    # the key pair can go: the instance keeps the copy it was given
    assert server.client.delete("/key-pairs/laptop").status_code == 204
    assert server.client.get("/key-pairs/laptop").status_code == 404

    wait_for(server, nocloud["id"], r"NUBIS-HOSTNAME web-7\.example\.org")
    wait_for(server, nocloud["id"], r"USERDATA-RAN uid=0 host=web-7\.example\.org")
    wait_for(server, nocloud["id"], r"NUBIS-USER-DATA-EXIT 0")
    key = wait_for(server, nocloud["id"], r"NUBIS-SSH-KEY (\S+ \S+)").group(1)
    assert pair["public_key"].startswith(key)
    # the network config on the disc is the port Nubis made
    port = server.client.get(f"/instances/{nocloud['id']}/ports").json()[0]
    network_config = guest_run(server, nocloud["id"], "cat /seed/network-config")
    assert port["mac"] in network_config and "10.237.0.20/24" in network_config

    wait_for(server, configdrive["id"], r"NUBIS-HOSTNAME seed-b")
    wait_for(server, configdrive["id"], r"USERDATA-RAN uid=0 host=seed-b")
    assert "NUBIS-SSH-KEY" not in server.console(configdrive["id"])  # it was given none
    meta = guest_run(server, configdrive["id"], "cat /seed/openstack/latest/meta_data.json")
    assert configdrive["id"] in meta

    # the disc stays in its drive: after a reboot the guest still finds its name there
    server.act(nocloud["id"], "reboot")
    server.wait_console(nocloud["id"], count=2)
    assert server.console(nocloud["id"]).count("NUBIS-HOSTNAME web-7.example.org") == 2

    for inst in (nocloud, configdrive):
        delete(server, inst)
    assert server.client.delete(f"/networks/{net['id']}").status_code == 204


def test_a_guest_without_a_seed_disc_boots_with_only_its_cdrom_drive(server):
    inst = create(server, name="no-seed", seed_format="none")
    assert inst["seed_format"] is None
    server.wait_console(inst["id"])
    conn = libvirt.open("qemu:///system")
    try:
        xml = conn.lookupByUUIDString(inst["id"]).XMLDesc(0)
    finally:
        conn.close()
    assert xml.count("device='cdrom'") == 1  # the drive for discs, no seed disc
    assert not [v for v in libvirt_leftovers(inst["id"]) if v.endswith("-seed.iso")]
    delete(server, inst)


def counts(server) -> tuple[int, int, int]:
    instances = server.client.get("/instances").json()["total"]
    pairs = len(server.client.get("/key-pairs").json())
    ports = sum(
        server.client.get(f"/networks/{n['id']}/ports").json()["total"]
        for n in server.client.get("/networks").json()["items"]
    )
    return instances, pairs, ports


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"key_pair": "nobody"}, 404, "key pair 'nobody' not found"),
        ({"user_data": "#!/bin/sh\n" + "x" * 70000}, 400, "at most 65536"),
        ({"user_data": "#cloud-config\n- not: [a mapping\n"}, 400, "cloud-config"),
        ({"user_data": "echo hi"}, 400, "must start with one of"),
        ({"hostname": "bad_name"}, 400, "hostname must be"),
        ({"seed_format": "floppy"}, 400, "seed_format must be one of"),
        ({"seed_format": "none", "user_data": SCRIPT}, 400, "user_data could not reach it"),
    ],
)
def test_bad_guest_input_is_refused_and_nothing_is_made(server, body, status, message):
    before = counts(server)
    resp = server.client.post(
        "/instances", json={"name": "bad-seed", "image": "nubis-tiny", "flavor": "m1.tiny"} | body
    )
    assert resp.status_code == status, resp.text
    assert message in resp.json()["error"]["message"]
    assert counts(server) == before


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"name": "k", "public_key": "ssh-rsa AAAAB3Nza"}, 400, "not a valid OpenSSH public key"),
        ({"name": "k", "public_key": "hello world"}, 400, "not a valid OpenSSH public key"),
        ({"name": "k", "key_type": "dsa"}, 400, "key_type must be one of"),
        ({"name": "bad name"}, 400, "key pair name must be"),
    ],
)
def test_malformed_keys_are_refused_and_nothing_is_kept(server, body, status, message):
    before = server.client.get("/key-pairs").json()
    resp = server.client.post("/key-pairs", json=body)
    assert resp.status_code == status, resp.text
    assert message in resp.json()["error"]["message"]
    assert server.client.get("/key-pairs").json() == before


def test_an_imported_key_and_a_taken_name(server):
    resp = server.client.post("/key-pairs", json={"name": "gen"})
    public = resp.json()["public_key"]
    resp = server.client.post("/key-pairs", json={"name": "imported", "public_key": public})
    assert resp.status_code == 201 and resp.json()["private_key"] is None
    resp = server.client.post("/key-pairs", json={"name": "imported", "public_key": public})
    assert resp.status_code == 409 and "already exists" in resp.json()["error"]["message"]
    for name in ("gen", "imported"):
        assert server.client.delete(f"/key-pairs/{name}").status_code == 204
