"""cloud-init seed discs: their files in both formats, read back from the ISO as the
guest's kernel would see them (Rock Ridge names), and user-data checks."""

import json

import pytest
import yaml

from nubis.db.models import Instance
from nubis.images.seed_iso import build_iso, read_iso
from nubis.services.compute.cloudinit import (
    MAX_USER_DATA_BYTES,
    GuestRequest,
    NicConfig,
    check_hostname,
    check_seed_format,
    check_user_data,
    hostname_from,
    seed_files,
)
from nubis.services.core.errors import BadRequest

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq8nNGPx0d6a4x1cU6n1Fv8a0Gm5wP2dGv3cO0X9Yb1 me"
NICS = [
    NicConfig("02:4e:42:00:00:01", "10.1.0.5", 24, "255.255.255.0", None, [], "net-a"),
    NicConfig(
        "02:4e:42:00:00:02", "10.2.0.9", 16, "255.255.0.0", "10.2.0.1", ["10.2.0.1"], "net-b"
    ),
]


def instance(**kw) -> Instance:
    values = {
        "id": "6f1c2a9e-0000-4000-8000-000000000001",
        "name": "web-1",
        "hostname": "web-1",
        "key_name": "laptop",
        "public_key": KEY,
        "user_data": "#!/bin/sh\necho hello\n",
        "seed_format": "nocloud",
    }
    return Instance(**(values | kw))


def test_nocloud_seed_says_who_the_instance_is_and_how_its_nics_are_set():
    files, label = seed_files(instance(), NICS)
    disc = read_iso(build_iso(files, label))
    assert set(disc) == {"meta-data", "user-data", "network-config"}
    meta = yaml.safe_load(disc["meta-data"])
    assert meta == {
        "instance-id": "6f1c2a9e-0000-4000-8000-000000000001",
        "local-hostname": "web-1",
        "public-keys": [KEY],
    }
    assert disc["user-data"] == b"#!/bin/sh\necho hello\n"
    net = yaml.safe_load(disc["network-config"])
    assert net["version"] == 2
    eth0, eth1 = net["ethernets"]["eth0"], net["ethernets"]["eth1"]
    assert eth0["match"] == {"macaddress": "02:4e:42:00:00:01"}
    assert eth0["addresses"] == ["10.1.0.5/24"] and "routes" not in eth0
    # the default route goes through the one NIC with a gateway
    assert eth1["routes"] == [{"to": "0.0.0.0/0", "via": "10.2.0.1"}]
    assert eth1["nameservers"] == {"addresses": ["10.2.0.1"]}


def test_configdrive_seed_is_openstack_shaped():
    files, label = seed_files(instance(seed_format="configdrive"), NICS)
    assert label == "config-2"
    disc = read_iso(build_iso(files, label))
    meta = json.loads(disc["openstack/latest/meta_data.json"])
    assert meta["uuid"] == "6f1c2a9e-0000-4000-8000-000000000001"
    assert meta["hostname"] == "web-1"
    assert meta["public_keys"] == {"laptop": KEY}
    assert disc["openstack/latest/user_data"] == b"#!/bin/sh\necho hello\n"
    net = json.loads(disc["openstack/latest/network_data.json"])
    assert [link["ethernet_mac_address"] for link in net["links"]] == [n.mac for n in NICS]
    assert net["networks"][1]["ip_address"] == "10.2.0.9"
    assert net["networks"][1]["netmask"] == "255.255.0.0"
    assert net["networks"][1]["routes"][0]["gateway"] == "10.2.0.1"
    assert net["services"] == [{"type": "dns", "address": "10.2.0.1"}]


def test_a_seed_without_key_or_user_data_still_names_the_instance():
    files, label = seed_files(instance(public_key=None, key_name=None, user_data=None), [])
    disc = read_iso(build_iso(files, label))
    assert "public-keys" not in yaml.safe_load(disc["meta-data"])
    assert disc["user-data"].startswith(b"#cloud-config")


@pytest.mark.parametrize(
    "text",
    [
        "#!/bin/sh\necho hi\n",
        "#cloud-config\npackages: [nginx]\n",
        "#cloud-config\n",
        "#include\nhttps://example.com/config\n",
        'Content-Type: multipart/mixed; boundary="B"\nMIME-Version: 1.0\n\n--B\n'
        "Content-Type: text/x-shellscript\n\n#!/bin/sh\necho hi\n--B--\n",
    ],
)
def test_user_data_cloud_init_understands_is_accepted(text):
    assert check_user_data(text) == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("echo hi\n", "must start with one of"),
        ("#cloud-config\npackages: [nginx\n", "not valid cloud-config YAML"),
        ("#cloud-config\n- a\n- b\n", "must be a YAML mapping"),
        ("#!/bin/sh\n" + "x" * MAX_USER_DATA_BYTES, "at most 65536 are accepted"),
        ("#!/bin/sh\n\x00", "NUL"),
        ("Content-Type: multipart/mixed\n\nno parts", "has no parts"),
    ],
)
def test_user_data_cloud_init_would_ignore_or_choke_on_is_refused(text, message):
    with pytest.raises(BadRequest, match=message):
        check_user_data(text)


def test_host_names():
    assert hostname_from("Web_01.prod") == "web-01-prod"
    assert hostname_from("___") == "instance"
    assert len(hostname_from("a" * 64)) == 63
    assert check_hostname("DB-1.example.org") == "db-1.example.org"
    for bad in ("-db", "db-", "db..x", "a" * 64, "db_1", ""):
        with pytest.raises(BadRequest, match="hostname must be"):
            check_hostname(bad)


def test_seed_formats_and_no_seed_disc():
    assert check_seed_format(GuestRequest(seed_format="configdrive")) == "configdrive"
    assert check_seed_format(GuestRequest(seed_format="none")) is None
    with pytest.raises(BadRequest, match="one of nocloud, configdrive, none"):
        check_seed_format(GuestRequest(seed_format="iso"))
    # what only the disc would tell the guest is refused without one
    asked = GuestRequest(key_pair="laptop", user_data="#!/bin/sh\n", seed_format="none")
    with pytest.raises(BadRequest, match="key_pair, user_data could not reach it"):
        check_seed_format(asked)
