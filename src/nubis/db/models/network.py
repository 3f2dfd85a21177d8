"""Networks, subnets, ports and security groups."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    JSON,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from nubis.db.models.base import Base, new_id, utcnow


class NetworkState(StrEnum):
    CREATING = "creating"  # being defined on its hosts
    EMPTY = "empty"  # no subnet yet: nothing on the hosts
    ADDING = "adding"  # getting (or losing) its subnets
    ACTIVE = "active"
    ERROR = "error"
    DELETING = "deleting"


class Network(Base):
    """An L2 segment of a cluster: ``overlay`` (one segment over every host of the
    cluster, carried between hosts in VXLAN with ``segment_id`` as its VNI), ``vlan``
    (a provider network: VLAN ``segment_id`` of the hosts' ``host_interface``), ``nat``
    (routed out through each host, a segment per host), ``isolated`` (guests and
    the host only, a segment per host) or ``bridged`` (onto a bridge the host already
    has). ``tag`` is unique (random, checked by the database): the names of the
    libvirt network and of its bridge on each host derive from it, so two networks
    never collide on a host."""

    __tablename__ = "networks"
    __table_args__ = (
        UniqueConstraint("project_id", "name"),
        UniqueConstraint("cluster_id", "segment_id", name="uq_networks_cluster_segment"),
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    cluster_id: Mapped[str] = mapped_column(ForeignKey("clusters.id"), index=True)
    mode: Mapped[str] = mapped_column(String(16))  # overlay | nat | isolated | bridged
    tag: Mapped[str] = mapped_column(String(8), unique=True)
    # overlay: the VXLAN network identifier; vlan: the VLAN id (unique in the cluster)
    segment_id: Mapped[int | None] = mapped_column(Integer)
    # vlan: the host interface carrying the VLANs (the same name on every host)
    host_interface: Mapped[str | None] = mapped_column(String(15))
    # bridged: the host's bridge the network joins (the same name on every host)
    host_bridge: Mapped[str | None] = mapped_column(String(15))
    state: Mapped[str] = mapped_column(String(16), default=NetworkState.CREATING)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    @property
    def libvirt_name(self) -> str:
        return f"nubis-net-{self.tag}"

    @property
    def scope_filter_name(self) -> str:
        return f"nubis-scope-{self.tag}"

    @property
    def overlay_device(self) -> str:
        """The VXLAN device joining the network's bridge on each host (overlay)."""
        return f"nvx-{self.tag}"

    @property
    def vlan_device(self) -> str:
        """The 802.1Q device joining the network's bridge on each host (vlan)."""
        return f"nvl-{self.tag}"

    @property
    def gateway_mac(self) -> str:
        """The bridge's MAC on every host (overlay: one distributed gateway); locally
        administered, from the unique tag, so no guest's MAC (52:54:00:...) is it."""
        tag = self.tag
        return f"0e:00:{tag[0:2]}:{tag[2:4]}:{tag[4:6]}:{tag[6:8]}"

    @property
    def bridge_name(self) -> str:
        """The bridge the host's libvirt makes for a nat or isolated network."""
        return self.host_bridge or f"nbr-{self.tag}"


class Subnet(Base):
    """An IPv4 range of a network: the gateway (the host's address on a nat or
    isolated network) and the pool ports' addresses are allocated from."""

    __tablename__ = "subnets"
    __table_args__ = (UniqueConstraint("network_id", "cidr"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    network_id: Mapped[str] = mapped_column(ForeignKey("networks.id"), index=True)
    name: Mapped[str | None] = mapped_column(String(64))  # optional (Neutron's)
    cidr: Mapped[str] = mapped_column(String(18))
    gateway: Mapped[str | None] = mapped_column(String(15))
    dns_servers: Mapped[list[str]] = mapped_column(JSON, default=list)
    pool_start: Mapped[str] = mapped_column(String(15))
    pool_end: Mapped[str] = mapped_column(String(15))
    # the host's DHCP server hands out the ports' addresses (libvirt serves one
    # subnet per network: the first); other subnets' ports are configured statically
    dhcp: Mapped[bool] = mapped_column(default=True)
    position: Mapped[int] = mapped_column(Integer, default=0)  # order in the network
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Port(Base):
    """One NIC of an instance on a network: a MAC and a fixed IP of a subnet. The
    unique constraints make an address impossible to hand out twice."""

    __tablename__ = "ports"
    __table_args__ = (UniqueConstraint("subnet_id", "ip"), UniqueConstraint("mac"))
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    network_id: Mapped[str] = mapped_column(ForeignKey("networks.id"), index=True)
    subnet_id: Mapped[str] = mapped_column(ForeignKey("subnets.id"), index=True)
    instance_id: Mapped[str | None] = mapped_column(ForeignKey("instances.id"), index=True)
    mac: Mapped[str] = mapped_column(String(17))
    ip: Mapped[str] = mapped_column(String(15))
    # attaching | attached | detaching (on an instance) or available (on none)
    status: Mapped[str] = mapped_column(String(16), default="attaching")
    position: Mapped[int] = mapped_column(Integer, default=0)  # NIC order in the instance
    # traffic limits: {"inbound": {"average": KiB/s, "peak": KiB/s, "burst": KiB},
    # "outbound": {...}} (inbound: to the guest); None: unlimited
    bandwidth: Mapped[dict | None] = mapped_column(JSON)
    # a port that is no instance's NIC: a router's leg or a floating IP's address
    # (``routing.ROUTER_INTERFACE`` ...), with the router it belongs to
    device_owner: Mapped[str | None] = mapped_column(String(32))
    router_id: Mapped[str | None] = mapped_column(ForeignKey("routers.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SecurityGroup(Base):
    """A set of rules applied to ports: what may come in (everything else inbound is
    dropped) and what they may start out (a port in a group starts nothing else).
    Enforced on each host by libvirt nwfilter."""

    __tablename__ = "security_groups"
    __table_args__ = (UniqueConstraint("project_id", "name"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    description: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    @property
    def filter_name(self) -> str:
        return f"nubis-sg-{self.id}"


class SecurityGroupRule(Base):
    """``ingress``: let in ``protocol`` traffic (to ports port_min-port_max for
    tcp/udp) from ``remote_cidr`` or from the ports of ``remote_group_id``;
    ``egress``: let the ports start such traffic to them."""

    __tablename__ = "security_group_rules"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    group_id: Mapped[str] = mapped_column(ForeignKey("security_groups.id"), index=True)
    direction: Mapped[str] = mapped_column(String(8), default="ingress")  # | egress
    protocol: Mapped[str] = mapped_column(String(8))  # tcp | udp | icmp | any
    port_min: Mapped[int | None] = mapped_column(Integer)
    port_max: Mapped[int | None] = mapped_column(Integer)
    remote_cidr: Mapped[str | None] = mapped_column(String(18))
    remote_group_id: Mapped[str | None] = mapped_column(
        ForeignKey("security_groups.id"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PortSecurityGroup(Base):
    __tablename__ = "port_security_groups"
    port_id: Mapped[str] = mapped_column(ForeignKey("ports.id"), primary_key=True)
    group_id: Mapped[str] = mapped_column(
        ForeignKey("security_groups.id"), primary_key=True, index=True
    )
