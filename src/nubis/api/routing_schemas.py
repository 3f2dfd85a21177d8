"""Request and response bodies of routers, floating IPs and port forwardings."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from nubis.api.network_schemas import PortOut
from nubis.api.schemas import In, Out


class RouterIn(In):
    name: str
    cluster: str | None = Field(default=None, description="default: cluster 'default'")
    host: str | None = Field(
        default=None,
        description="its network node (system administrators; default: the host with "
        "a network agent and the fewest routers)",
    )
    external_network: str | None = Field(default=None, description="its external gateway")
    snat: bool = Field(default=True, description="source NAT out through the gateway")


class GatewayIn(In):
    network: str = Field(description="an external network, by id or name")
    snat: bool = True


class InterfaceIn(In):
    network: str = Field(description="an overlay network, by id or name")


class RouterOut(Out):
    id: str
    name: str
    project_id: str
    cluster_id: str
    host_id: str = Field(description="the network node holding the router")
    host_name: str | None = None
    namespace: str = Field(description="its network namespace on that host")
    external_network_id: str | None
    gateway_ip: str | None = None
    snat: bool
    state: str
    error: str | None
    created_at: datetime
    interfaces: list[PortOut] = Field(default_factory=list)


class FloatingIPIn(In):
    network: str = Field(description="the external network, by id or name")
    port: str | None = Field(default=None, description="associate with this port (id)")
    address: str | None = Field(default=None, description="this address (default: the next)")
    description: str = Field(default="", max_length=255)


class AssociateIn(In):
    port: str | None = Field(description="the port (id) to reach; null: none")


class FloatingIPOut(Out):
    id: str
    project_id: str
    network_id: str
    address: str
    fixed_port_id: str | None
    fixed_ip: str | None = None
    router_id: str | None = None
    description: str
    created_at: datetime


class ForwardingIn(In):
    protocol: str = Field(description="tcp | udp")
    external_port: int
    port: str = Field(description="the port (id) traffic goes to")
    internal_port: int


class ForwardingOut(Out):
    id: str
    floating_ip_id: str
    protocol: str
    external_port: int
    port_id: str
    internal_ip: str
    internal_port: int
    created_at: datetime
