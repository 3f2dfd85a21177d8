"""Request and response bodies of networking: networks, subnets, ports, security groups
and key pairs."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from nubis.api.schemas import In, Out


class SubnetIn(In):
    cidr: str = Field(description="IPv4 network with its prefix, e.g. 10.20.0.0/24")
    name: str | None = Field(default=None, max_length=64, description="optional")
    gateway: str | None = Field(
        default=None, description="default: the first host address (nat and isolated)"
    )
    dns_servers: list[str] | None = Field(default=None, description="default: the gateway")
    pool_start: str | None = Field(default=None, description="first address handed out")
    pool_end: str | None = Field(default=None, description="last address handed out")


class NetworkIn(In):
    name: str
    mode: str = Field(
        description="overlay (one segment over every host of the cluster, VXLAN) | nat | "
        "isolated | bridged | vlan"
    )
    subnets: list[SubnetIn] = Field(
        default_factory=list,
        description="up to four; DHCP serves the first. None: an empty network, whose "
        "subnets are added later (POST /networks/{ref}/subnets), before any port",
    )
    cluster: str | None = Field(default=None, description="default: cluster 'default'")
    host_bridge: str | None = Field(
        default=None, description="bridged: the bridge every host of the cluster has"
    )
    host_interface: str | None = Field(
        default=None, description="vlan: the interface carrying VLANs on every host"
    )
    segmentation_id: int | None = Field(default=None, description="vlan: the VLAN id (1-4094)")


class SubnetOut(Out):
    id: str
    name: str | None
    cidr: str
    gateway: str | None
    dns_servers: list[str]
    pool_start: str
    pool_end: str
    dhcp: bool


class SubnetsIn(In):
    subnets: list[SubnetIn] = Field(description="one to four; DHCP serves the first")


class NetworkOut(Out):
    id: str
    name: str
    project_id: str
    cluster_id: str
    mode: str
    tag: str
    bridge_name: str
    segment_id: int | None = Field(description="overlay: the VXLAN VNI; vlan: the VLAN id")
    host_interface: str | None = None
    state: str
    error: str | None
    created_at: datetime
    subnets: list[SubnetOut] = Field(default_factory=list)


class PortOut(Out):
    id: str
    network_id: str
    subnet_id: str
    instance_id: str | None
    mac: str
    ip: str
    status: str
    position: int
    bandwidth: dict | None = Field(description="traffic limits (KiB/s, KiB); None: unlimited")
    security_groups: list[str] = Field(default_factory=list, description="group ids")
    created_at: datetime


class PortAccepted(PortOut):
    task_id: str


class SecurityGroupIn(In):
    name: str
    description: str = ""


class RuleIn(In):
    direction: str = Field(
        default="ingress", description="ingress (what reaches the ports) | egress (what they start)"
    )
    protocol: str = Field(description="tcp | udp | icmp | any")
    port_min: int | None = Field(default=None, description="tcp/udp: first port")
    port_max: int | None = Field(default=None, description="tcp/udp: last port (default: port_min)")
    remote_cidr: str | None = Field(default=None, description="from (egress: to) these addresses")
    remote_group: str | None = Field(
        default=None, description="from (egress: to) the ports of this group"
    )


class RuleOut(Out):
    id: str
    direction: str
    protocol: str
    port_min: int | None
    port_max: int | None
    remote_cidr: str | None
    remote_group_id: str | None
    created_at: datetime


class SecurityGroupOut(Out):
    id: str
    name: str
    description: str
    project_id: str
    created_at: datetime
    rules: list[RuleOut] = Field(default_factory=list)


class KeyPairIn(In):
    name: str
    public_key: str | None = Field(
        default=None,
        description="an OpenSSH public key to import; none: a pair is generated",
    )
    key_type: str = Field(default="ed25519", description="generated pairs: ed25519 | rsa")


class KeyPairOut(Out):
    id: str
    name: str
    project_id: str
    key_type: str
    fingerprint: str = Field(description="SHA256:..., as ssh-keygen -l prints it")
    public_key: str
    created_at: datetime


class KeyPairCreated(KeyPairOut):
    private_key: str | None = Field(
        default=None,
        description="generated pairs only: the private key, shown this once, never stored",
    )
