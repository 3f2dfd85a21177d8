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
UNDERLAY_MTU = 1500
VXLAN_OVERHEAD = 50  # outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14)
MTU = UNDERLAY_MTU - VXLAN_OVERHEAD


def hostnames(session: Session, ports: list[Port]) -> dict[str, str]:
    """port id -> the DNS name of its instance (the first label of its host name);
    a name two instances of the network share is given to the first only."""
    out: dict[str, str] = {}
    taken: set[str] = set()
    for port in ports:
        inst = session.get(Instance, port.instance_id) if port.instance_id else None
        if inst is None or not inst.hostname:
            continue
        label = inst.hostname.split(".")[0]
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
            session.scalars(select(Port).where(Port.subnet_id == subnet.id).order_by(Port.ip))
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
