"""What an instance is told at first boot: cloud-init's seed disc.

Each instance gets a small ISO in a second CD-ROM drive, in one of the two
formats cloud-init reads from a disc:

- ``nocloud`` (label ``cidata``): ``meta-data``, ``user-data``, ``network-config``
  (network config version 2);
- ``configdrive`` (label ``config-2``, OpenStack's): ``openstack/latest/``
  ``meta_data.json``, ``user_data``, ``network_data.json``.

Both carry the instance id, its host name, the key pair's public key, the
user-data, and the static addresses of its ports (the same ones the host's DHCP
server hands out). The disc is made once, when the instance is first defined:
cloud-init acts on it at first boot, as it does with OpenStack's config drive.
"""

from __future__ import annotations

import email
import json
import re
from dataclasses import dataclass
from ipaddress import IPv4Network

import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session

from nubis.db.models import Instance, Network, Port, Subnet
from nubis.images.seed_iso import build_iso
from nubis.services.core.errors import BadRequest

SEED_FORMATS = ("nocloud", "configdrive")
NO_SEED = "none"  # no seed disc: an image without cloud-init
MAX_USER_DATA_BYTES = 65536  # Nova's limit, near enough (64 KiB)
HOSTNAME_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
MAX_HOSTNAME = 63
# user-data cloud-init understands, by its first line (what it calls the part type)
USER_DATA_KINDS = {
    "#!": "a script",
    "#cloud-config": "cloud-config",
    "#cloud-boothook": "a boothook",
    "#include": "an include list",
    "#part-handler": "a part handler",
}


@dataclass(frozen=True)
class GuestRequest:
    """What the user asks the guest to be told (all optional)."""

    hostname: str | None = None
    key_pair: str | None = None
    user_data: str | None = None
    seed_format: str = "nocloud"


def hostname_from(name: str) -> str:
    """A valid host name made from an instance's name ('Web_01.prod' -> 'web-01-prod')."""
    label = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:MAX_HOSTNAME].strip("-")
    return label or "instance"


def check_hostname(hostname: str) -> str:
    """A host name (one or more dot-separated labels), lower-cased; BadRequest otherwise."""
    value = hostname.lower() if isinstance(hostname, str) else ""
    if (
        not value
        or len(value) > MAX_HOSTNAME
        or not all(HOSTNAME_LABEL.match(label) for label in value.split("."))
    ):
        raise BadRequest(
            f"hostname must be at most {MAX_HOSTNAME} characters: labels of letters, "
            "digits and '-' (not at either end), separated by '.'"
        )
    return value


def check_seed_format(guest: GuestRequest) -> str | None:
    """The seed disc's format to keep; None for ``none``: no disc, so nothing may be
    asked that only the disc would tell the guest."""
    value = guest.seed_format
    if value == NO_SEED:
        asked = [
            what
            for what, given in (
                ("hostname", guest.hostname),
                ("key_pair", guest.key_pair),
                ("user_data", guest.user_data),
            )
            if given
        ]
        if asked:
            raise BadRequest(
                f"seed_format none gives the guest no seed disc: {', '.join(asked)} "
                "could not reach it"
            )
        return None
    if value not in SEED_FORMATS:
        raise BadRequest(f"seed_format must be one of {', '.join((*SEED_FORMATS, NO_SEED))}")
    return value


def check_user_data(text: str) -> str:
    """User-data as cloud-init will read it: size-limited, of a kind it knows, and a
    cloud-config that parses as a YAML mapping. BadRequest otherwise."""
    if not isinstance(text, str):
        raise BadRequest("user_data must be text")
    size = len(text.encode())
    if size > MAX_USER_DATA_BYTES:
        raise BadRequest(f"user_data is {size} bytes; at most {MAX_USER_DATA_BYTES} are accepted")
    if "\x00" in text:
        raise BadRequest("user_data must not contain NUL characters")
    first = text.split("\n", 1)[0].strip()
    if first.lower().startswith("content-type: multipart/"):
        if not email.message_from_string(text).is_multipart():
            raise BadRequest("user_data claims to be MIME multipart but has no parts")
        return text
    kind = next((k for k in USER_DATA_KINDS if first.startswith(k)), None)
    if kind is None:
        known = ", ".join(repr(k) for k in USER_DATA_KINDS)
        raise BadRequest(
            f"user_data must start with one of {known} or be MIME multipart "
            "(cloud-init ignores anything else)"
        )
    if kind == "#cloud-config":
        try:
            config = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise BadRequest(f"user_data is not valid cloud-config YAML: {exc}") from exc
        if config is not None and not isinstance(config, dict):
            raise BadRequest("user_data cloud-config must be a YAML mapping (key: value)")
    return text


@dataclass(frozen=True)
class NicConfig:
    mac: str
    ip: str
    prefix: int
    netmask: str
    gateway: str | None
    dns: list[str]
    network_id: str


def nic_configs(session: Session, instance_id: str) -> list[NicConfig]:
    rows = session.execute(
        select(Port, Subnet, Network)
        .join(Subnet, Port.subnet_id == Subnet.id)
        .join(Network, Port.network_id == Network.id)
        .where(Port.instance_id == instance_id)
        .order_by(Port.position)
    ).all()
    nics = []
    for port, subnet, network in rows:
        cidr = IPv4Network(subnet.cidr)
        # on nat and isolated networks the host's dnsmasq answers DNS at the gateway
        dns = list(subnet.dns_servers) or (
            [subnet.gateway] if subnet.gateway and network.mode != "bridged" else []
        )
        nics.append(
            NicConfig(
                mac=port.mac,
                ip=port.ip,
                prefix=cidr.prefixlen,
                netmask=str(cidr.netmask),
                gateway=subnet.gateway if network.mode != "isolated" else None,
                dns=dns,
                network_id=network.id,
            )
        )
    return nics


def _default_route_nic(nics: list[NicConfig]) -> int | None:
    """The one NIC the default route goes through: the first with a gateway."""
    return next((i for i, n in enumerate(nics) if n.gateway), None)


def nocloud_network_config(nics: list[NicConfig]) -> dict:
    """cloud-init network config version 2 (netplan's shape)."""
    route_nic = _default_route_nic(nics)
    ethernets = {}
    for i, nic in enumerate(nics):
        eth: dict = {
            "match": {"macaddress": nic.mac},
            "set-name": f"eth{i}",
            "dhcp4": False,
            "addresses": [f"{nic.ip}/{nic.prefix}"],
        }
        if i == route_nic:
            eth["routes"] = [{"to": "0.0.0.0/0", "via": nic.gateway}]
        if nic.dns:
            eth["nameservers"] = {"addresses": nic.dns}
        ethernets[f"eth{i}"] = eth
    return {"version": 2, "ethernets": ethernets}


def configdrive_network_data(nics: list[NicConfig]) -> dict:
    """OpenStack's network_data.json."""
    route_nic = _default_route_nic(nics)
    links, networks, services = [], [], []
    for i, nic in enumerate(nics):
        links.append({"id": f"tap{i}", "type": "phy", "ethernet_mac_address": nic.mac})
        net: dict = {
            "id": f"network{i}",
            "type": "ipv4",
            "link": f"tap{i}",
            "ip_address": nic.ip,
            "netmask": nic.netmask,
            "network_id": nic.network_id,
            "routes": [],
        }
        if i == route_nic:
            net["routes"] = [{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": nic.gateway}]
        networks.append(net)
        services += [{"type": "dns", "address": a} for a in nic.dns]
    unique_services = list({s["address"]: s for s in services}.values())
    return {"links": links, "networks": networks, "services": unique_services}


def seed_files(instance: Instance, nics: list[NicConfig]) -> tuple[dict[str, bytes], str]:
    """The seed disc's files and its volume label, in the instance's format."""
    hostname = instance.hostname or hostname_from(instance.name)
    keys = [instance.public_key] if instance.public_key else []
    user_data = (instance.user_data or "").encode()
    if instance.seed_format == "configdrive":
        meta = {
            "uuid": instance.id,
            "name": instance.name,
            "hostname": hostname,
            "launch_index": 0,
            "availability_zone": "nova",
            "public_keys": {instance.key_name or "key": keys[0]} if keys else {},
            "keys": [{"name": instance.key_name or "key", "type": "ssh", "data": k} for k in keys],
        }
        files = {
            "openstack/latest/meta_data.json": json.dumps(meta, indent=1).encode(),
            "openstack/latest/network_data.json": json.dumps(
                configdrive_network_data(nics), indent=1
            ).encode(),
        }
        if user_data:
            files["openstack/latest/user_data"] = user_data
        return files, "config-2"
    meta = {"instance-id": instance.id, "local-hostname": hostname}
    if keys:
        meta["public-keys"] = keys
    return {
        "meta-data": yaml.safe_dump(meta, sort_keys=False).encode(),
        # NoCloud wants the file even when there is nothing to say
        "user-data": user_data or b"#cloud-config\n{}\n",
        "network-config": yaml.safe_dump(nocloud_network_config(nics), sort_keys=False).encode(),
    }, "cidata"


def build_seed(session: Session, instance: Instance) -> bytes:
    files, label = seed_files(instance, nic_configs(session, instance.id))
    return build_iso(files, label)
