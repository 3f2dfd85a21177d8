"""libvirt network and NIC descriptions built from their typed specs, and read back."""

import xml.etree.ElementTree as ET

from nubis.drivers.libvirt.domain_xml import (
    DomainSpec,
    InterfaceSpec,
    build_domain_xml,
    parse_domain_xml,
)
from nubis.drivers.libvirt.networks import (
    NetworkSpec,
    Reservation,
    SubnetSpec,
    bridge_of,
    network_xml,
    reservations_of,
)


def test_nat_network_serves_only_its_reservations():
    spec = NetworkSpec(
        "nubis-net-3",
        "nat",
        "nbr3",
        (
            SubnetSpec(
                "10.3.0.0/24",
                "10.3.0.1",
                True,
                (Reservation("02:4e:42:00:00:01", "10.3.0.10"),),
            ),
            SubnetSpec("10.4.0.0/25", "10.4.0.1", False),
        ),
    )
    xml = network_xml(spec)
    root = ET.fromstring(xml)
    assert root.find("forward").get("mode") == "nat"
    assert bridge_of(xml) == "nbr3"
    ips = root.findall("ip")
    assert [(i.get("address"), i.get("prefix")) for i in ips] == [
        ("10.3.0.1", "24"),
        ("10.4.0.1", "25"),
    ]
    assert ips[0].find("dhcp/range") is None  # reservations only: nobody else gets a lease
    assert ips[1].find("dhcp") is None
    assert reservations_of(xml) == {"02:4e:42:00:00:01": "10.3.0.10"}


def test_isolated_network_has_no_forward_and_bridged_joins_the_host_bridge():
    isolated = ET.fromstring(network_xml(NetworkSpec("n", "isolated", "nbr4", ())))
    assert isolated.find("forward") is None
    bridged = ET.fromstring(network_xml(NetworkSpec("n", "bridged", "br0", ())))
    assert bridged.find("forward").get("mode") == "bridge"
    assert bridged.find("bridge").get("name") == "br0"
    assert bridged.find("ip") is None


def test_domain_nics_round_trip_in_order():
    nics = (
        InterfaceSpec("02:4e:42:00:00:01", "nubis-net-1"),
        InterfaceSpec("02:4e:42:00:00:02", "nubis-net-2"),
    )
    spec = DomainSpec(name="d", uuid="u", vcpus=1, memory_mib=64, interfaces=nics)
    assert parse_domain_xml(build_domain_xml(spec)).interfaces == nics
