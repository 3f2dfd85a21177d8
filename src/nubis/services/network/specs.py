"""What a host holds of a network, as the network driver takes it (``NetworkSpec``):
its subnets, a DHCP reservation for every port (with its instance's name on an
overlay network), and for an overlay network its gateway MAC and tunnel MTU."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from nubis.db.models import Instance, Network, Port, Subnet
from nubis.drivers.libvirt.networks import NetworkSpec, Reservation
from nubis.drivers.libvirt.networks import SubnetSpec as DriverSubnet

MODE = "overlay"
EXTERNAL = "external"  # a provider network on a host bridge: routers' gateways, floating IPs
UNDERLAY_MTU = 1500
VXLAN_OVERHEAD = 50  # outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14)
MTU = UNDERLAY_MTU - VXLAN_OVERHEAD


def hostnames(session: Session, ports: list[Port]) -> dict[str, str]:
    """port id -> the DNS name of its instance (the first label of its host name);
    a name two instances of the network share is given to the first only."""
    out: dict[str, str] = {}
    taken: set[str] = set()
    ids = [p.instance_id for p in ports if p.instance_id]
    names = dict(
        session.execute(select(Instance.id, Instance.hostname).where(Instance.id.in_(ids))).all()
    )
    for port in ports:
        hostname = names.get(port.instance_id) if port.instance_id else None
        if not hostname:
            continue
        label = hostname.split(".")[0]
        if label not in taken:
            taken.add(label)
            out[port.id] = label
    return out


def spec_of(session: Session, network: Network) -> NetworkSpec:
    """The libvirt network: its subnets, and a DHCP reservation for every port."""
    overlay = network.mode == MODE
    subnets = session.scalars(
        select(Subnet).where(Subnet.network_id == network.id).order_by(Subnet.position)
    ).all()
    specs = []
    for subnet in subnets:
        ports = list(
            session.scalars(
                select(Port)
                .where(Port.subnet_id == subnet.id, Port.device_owner.is_(None))
                .order_by(Port.ip)
            )
        )
        names = hostnames(session, ports) if overlay else {}
        reservations = (
            tuple(Reservation(p.mac, p.ip, names.get(p.id)) for p in ports) if subnet.dhcp else ()
        )
        specs.append(DriverSubnet(subnet.cidr, subnet.gateway, subnet.dhcp, reservations))
    return NetworkSpec(
        network.libvirt_name,
        network.mode,
        network.bridge_name,
        tuple(specs),
        mac=network.gateway_mac if overlay else None,
        mtu=MTU if overlay else None,
    )
