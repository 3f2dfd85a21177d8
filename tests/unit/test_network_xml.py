"""libvirt network and NIC descriptions built from their typed specs, and read back."""

import xml.etree.ElementTree as ET

from nubis.drivers.libvirt.domain_xml import (
    DomainSpec,
    InterfaceSpec,
    Rate,
    build_domain_xml,
    parse_domain_xml,
)
from nubis.drivers.libvirt.networks import (
    NetworkSpec,
    Reservation,
    SubnetSpec,
    bridge_of,
    network_xml,
    reservation_list,
    reservations_of,
)
from nubis.drivers.libvirt.nwfilters import scope_filter_xml


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


def test_overlay_network_is_one_gateway_on_every_host():
    """The same bridge MAC and address on every host, no spanning tree over the
    tunnels, the tunnel's MTU (which libvirt's dnsmasq hands the guests); the
    reservations carry the instances' names for DNS."""
    spec = NetworkSpec(
        "nubis-net-5",
        "overlay",
        "nbr5",
        (
            SubnetSpec(
                "10.5.0.0/24",
                "10.5.0.1",
                True,
                (Reservation("52:54:00:00:00:07", "10.5.0.7", "web-1"),),
            ),
        ),
        mac="0e:00:12:34:56:78",
        mtu=1450,
    )
    xml = network_xml(spec)
    root = ET.fromstring(xml)
    assert root.find("forward") is None  # nothing routed out through the host
    assert root.find("bridge").get("stp") == "off"
    assert root.find("mac").get("address") == "0e:00:12:34:56:78"
    assert root.find("mtu").get("size") == "1450"
    assert reservation_list(xml) == [Reservation("52:54:00:00:00:07", "10.5.0.7", "web-1")]
    # dnsmasq reads the options file the agent keeps (the router, once there is one)
    ns = "{http://libvirt.org/schemas/network/dnsmasq/1.0}"
    options = [o.get("value") for o in root.iter(f"{ns}option")]
    assert options == ["dhcp-optsfile=/var/lib/libvirt/nubis/dhcp/nubis-net-5.opts"]
    nat = ET.fromstring(network_xml(NetworkSpec("n", "nat", "nbr6", ())))
    assert nat.find("mac") is None and nat.find("mtu") is None
    assert not list(nat.iter(f"{ns}option"))
    assert nat.find("bridge").get("stp") == "on"


def test_vlan_network_joins_the_bridge_the_agent_makes():
    root = ET.fromstring(network_xml(NetworkSpec("n", "vlan", "nbr-0a0b0c0d", ())))
    assert root.find("forward").get("mode") == "bridge"
    assert root.find("bridge").get("name") == "nbr-0a0b0c0d"
    assert root.find("ip") is None  # the site's network serves its addresses


def test_isolated_scope_drops_new_connections_out_only():
    """An isolated (or overlay) network's ports start connections to their own subnets
    only: the rest of the address space is dropped, by rules naming the NEW state, so
    libvirt adds no reverse rule that would drop what comes in before the security
    groups let it in. The scope only drops (DHCP aside): the groups' egress rules,
    after it, still decide what a port may start inside its subnets."""
    import ipaddress

    from nubis.drivers.libvirt.nwfilters import outside

    root = ET.fromstring(scope_filter_xml("s", "0" * 8, ["10.5.0.0/24"], ["10.6.0.0/24"], True))
    drops = [r for r in root.findall("rule") if r.get("action") == "drop"]
    assert drops[0].find("all").attrib == {"dstipaddr": "10.6.0.0", "dstipmask": "24"}
    assert all(r.find("all").get("state") == "NEW" for r in drops[1:])
    dropped = [
        ipaddress.ip_network(f"{r.find('all').get('dstipaddr')}/{r.find('all').get('dstipmask')}")
        for r in drops[1:]
    ]
    for kept in ("10.5.0.0", "10.5.0.255", "255.255.255.255"):
        assert not any(ipaddress.ip_address(kept) in net for net in dropped), kept
    for gone in ("0.0.0.0", "10.4.255.255", "10.5.1.0", "8.8.8.8", "255.255.255.254"):
        assert any(ipaddress.ip_address(gone) in net for net in dropped), gone
    accepts = [r for r in root.findall("rule") if r.get("action") == "accept"]
    assert [(r[0].tag, r[0].get("dstportstart")) for r in accepts] == [("udp", "67")]
    # several subnets: each is kept, and the rest is as few CIDRs as it can be
    assert outside(["10.0.0.0/8", "10.0.0.0/24"]) == outside(["10.0.0.0/8"])
    assert len(outside(["10.0.0.0/8"])) == 8


def test_domain_nics_round_trip_in_order():
    nics = (
        InterfaceSpec("02:4e:42:00:00:01", "nubis-net-1"),
        InterfaceSpec("02:4e:42:00:00:02", "nubis-net-2"),
        InterfaceSpec(
            "02:4e:42:00:00:03",
            "nubis-net-2",
            inbound=Rate(1000, 2000, 512),
            outbound=Rate(250),
        ),
    )
    spec = DomainSpec(name="d", uuid="u", vcpus=1, memory_mib=64, interfaces=nics)
    assert parse_domain_xml(build_domain_xml(spec)).interfaces == nics


def test_group_filter_allows_each_source_and_port_range():
    from nubis.drivers.libvirt.nwfilters import Allow, group_filter_xml

    xml = group_filter_xml(
        "nubis-sg-g",
        "0b2f3a56-0000-4000-8000-000000000001",
        [
            Allow("tcp", "10.1.0.5/32", 80, 90),
            Allow("icmp"),
            Allow("any", "10.2.0.0/16"),
            Allow("udp", "10.3.0.0/24", 53, 53, direction="out"),
        ],
    )
    root = ET.fromstring(xml)
    assert root.findtext("uuid") == "0b2f3a56-0000-4000-8000-000000000001"
    rules = root.findall("rule")
    assert [(r.get("action"), r.get("direction")) for r in rules] == [("accept", "in")] * 3 + [
        ("accept", "out")
    ]
    tcp, icmp, every, dns = (r[0] for r in rules)
    # egress: the remote is the destination
    assert (dns.tag, dns.get("dstipaddr"), dns.get("dstipmask")) == ("udp", "10.3.0.0", "24")
    assert dns.get("srcipaddr") is None and dns.get("dstportstart") == "53"
    assert (tcp.tag, tcp.get("srcipaddr"), tcp.get("srcipmask")) == ("tcp", "10.1.0.5", "32")
    assert (tcp.get("dstportstart"), tcp.get("dstportend")) == ("80", "90")
    assert icmp.tag == "icmp" and icmp.get("srcipaddr") is None  # from anywhere
    assert (every.tag, every.get("srcipaddr"), every.get("srcipmask")) == ("all", "10.2.0.0", "16")


def test_port_filter_drops_what_no_group_lets_in_and_scope_keeps_networks_apart():
    from nubis.drivers.libvirt.nwfilters import port_filter_xml, scope_filter_xml

    port = ET.fromstring(port_filter_xml("p", "u", "nubis-scope-x", ["nubis-sg-a"]))
    refs = [f.get("filter") for f in port.findall("filterref")]
    assert refs == ["clean-traffic", "nubis-scope-x", "nubis-sg-a"]
    drop = [r for r in port.findall("rule") if r.get("action") == "drop"]
    assert [(r.get("direction"), int(r.get("priority"))) for r in drop] == [
        ("out", 90),  # DHCP answers from the guest: before any accept
        ("out", 1000),  # in groups: nothing starts out that no egress rule allows
        ("in", 1000),
    ]
    assert drop[1][0].get("state") == "NEW"  # answers to what came in still leave
    assert not [
        r
        for r in port.findall("rule")
        if r.get("direction") == "out" and r.get("action") == "accept"
    ]
    # a port in no group starts anything
    open_port = ET.fromstring(port_filter_xml("p", "u", "nubis-scope-x", []))
    outs = [
        (r.get("action"), r[0].tag)
        for r in open_port.findall("rule")
        if r.get("direction") == "out"
    ]
    assert ("accept", "all") in outs and ("drop", "all") not in outs
    dhcp = drop[0][0]
    assert (dhcp.tag, dhcp.get("srcportstart"), dhcp.get("dstportstart")) == ("udp", "67", "68")

    nat = ET.fromstring(scope_filter_xml("s", "u", ["10.1.0.0/24"], ["10.2.0.0/24"], False))
    rules = [
        (r.get("action"), r.get("direction"), r[0].get("dstipaddr")) for r in nat.findall("rule")
    ]
    assert rules[:1] == [("drop", "out", "10.2.0.0")]
    assert [r for r in nat.findall("rule") if r.get("action") == "accept"][0][0].tag == "udp"
