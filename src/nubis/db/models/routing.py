"""Routers, floating IPs and port forwardings (the network's layer 3)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from nubis.db.models.base import Base, new_id, utcnow

# what a port that is not an instance's NIC belongs to (Neutron's device_owner)
ROUTER_INTERFACE = "network:router_interface"
ROUTER_GATEWAY = "network:router_gateway"
FLOATING_IP = "network:floatingip"


class Router(Base):
    """A router: a network namespace on its network node (``host_id``) joining the
    overlay networks it has an interface on (ports with ``router_id``) to each other
    and, through its gateway port, to ``external_network_id``: source NAT when
    ``snat``, and the floating IPs and port forwardings of those networks' ports."""

    __tablename__ = "routers"
    __table_args__ = (UniqueConstraint("project_id", "name"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    cluster_id: Mapped[str] = mapped_column(ForeignKey("clusters.id"), index=True)
    host_id: Mapped[str] = mapped_column(ForeignKey("hosts.id"), index=True)
    tag: Mapped[str] = mapped_column(String(8), unique=True)
    external_network_id: Mapped[str | None] = mapped_column(ForeignKey("networks.id"))
    snat: Mapped[bool] = mapped_column(default=True)
    # active | error (its host refused or missed the last change; the reconciliation
    # puts it again)
    state: Mapped[str] = mapped_column(String(16), default="active")
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    @property
    def namespace(self) -> str:
        return f"nqr-{self.tag}"

    @property
    def gateway_device(self) -> str:
        return f"nrg-{self.tag}"


class StaleRouter(Base):
    """A deleted router's namespace that may still be on its host (the host could
    not be told, or the control plane died before it was): removed from the host at
    the next reconciliation that reaches it. Only these go: a namespace Nubis has no
    record of is left alone (it may be another control plane's)."""

    __tablename__ = "stale_routers"
    host_id: Mapped[str] = mapped_column(
        ForeignKey("hosts.id", ondelete="CASCADE"), primary_key=True
    )
    namespace: Mapped[str] = mapped_column(String(16), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class FloatingIP(Base):
    """An address of an external network (held by ``port_id``, a port of that
    network) that reaches ``fixed_port_id`` through its network's router (1:1 NAT),
    or, not associated, the port forwardings it has."""

    __tablename__ = "floating_ips"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    network_id: Mapped[str] = mapped_column(ForeignKey("networks.id"), index=True)
    port_id: Mapped[str] = mapped_column(ForeignKey("ports.id"), unique=True)
    address: Mapped[str] = mapped_column(String(15))
    fixed_port_id: Mapped[str | None] = mapped_column(ForeignKey("ports.id"), unique=True)
    description: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PortForwarding(Base):
    """``protocol`` traffic to the floating IP's ``external_port`` goes to
    ``internal_port`` of the port ``port_id`` (at its address ``internal_ip``)."""

    __tablename__ = "port_forwardings"
    __table_args__ = (UniqueConstraint("floating_ip_id", "protocol", "external_port"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    floating_ip_id: Mapped[str] = mapped_column(ForeignKey("floating_ips.id"), index=True)
    protocol: Mapped[str] = mapped_column(String(8))  # tcp | udp
    external_port: Mapped[int] = mapped_column(Integer)
    port_id: Mapped[str] = mapped_column(ForeignKey("ports.id"), index=True)
    internal_ip: Mapped[str] = mapped_column(String(15))
    internal_port: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
