"""The router namespace's NAT and filter tables, and what the agent accepts as a
router's state (the host commands themselves run in the router integration test)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from nubis.agent.router import Floating, Forward, Leg, RouterState, nat_rules


def state(**extra) -> RouterState:
    return RouterState(
        gateway=Leg(
            host_end="nrg-0a0b0c0d", bridge="brex", address="203.0.113.100/24",
            mac="02:4e:42:00:00:01",
        ),
        default_route="203.0.113.1",
        interfaces=[
            Leg(host_end="nri-11111111", bridge="nbr-aaaaaaaa", address="10.41.0.3/24",
                mac="02:4e:42:00:00:02", mtu=1450),
        ],
        **extra,
    )  # fmt: skip


def test_source_nat_leaves_from_the_gateway_address():
    rules = nat_rules(state())
    assert "-A POSTROUTING -o qrg-0a0b0c0d -j SNAT --to-source 203.0.113.100" in rules
    # from outside: only what a NAT rule let in, and answers
    assert "-A FORWARD -i qrg-0a0b0c0d -m conntrack --ctstate RELATED,ESTABLISHED,DNAT" in rules
    assert rules.index("DNAT -j ACCEPT") < rules.index("-A FORWARD -i qrg-0a0b0c0d -j DROP")
    assert "SNAT" not in nat_rules(state(snat=False))


def test_floating_ip_is_nat_both_ways_and_before_source_nat():
    rules = nat_rules(state(floating=[Floating(external="203.0.113.7", internal="10.41.0.5")]))
    assert "-A PREROUTING -d 203.0.113.7/32 -j DNAT --to-destination 10.41.0.5" in rules
    own = "-A POSTROUTING -s 10.41.0.5/32 -o qrg-0a0b0c0d -j SNAT --to-source 203.0.113.7"
    assert own in rules
    assert rules.index(own) < rules.index("--to-source 203.0.113.100")


def test_port_forwarding_names_protocol_and_ports():
    fw = Forward(protocol="udp", external="203.0.113.8", external_port=5353,
                 internal="10.41.0.6", internal_port=53)  # fmt: skip
    rules = nat_rules(state(forwards=[fw]))
    assert (
        "-A PREROUTING -d 203.0.113.8/32 -p udp -m udp --dport 5353 "
        "-j DNAT --to-destination 10.41.0.6:53"
    ) in rules


def test_no_gateway_no_nat_out():
    rules = nat_rules(state().model_copy(update={"gateway": None}))
    assert "POSTROUTING -o" not in rules and "FORWARD -i" not in rules


@pytest.mark.parametrize(
    "bad",
    [
        {"host_end": "eth0"},  # not a router leg: the agent touches its own devices only
        {"host_end": "nrg-0a0b0c0d; reboot"},
        {"bridge": "br ex"},
        {"address": "10.41.0.3"},  # no prefix
        {"address": "10.41.0.300/24"},
        {"mac": "zz:4e:42:00:00:02"},
    ],
)
def test_a_leg_refuses_what_is_not_one(bad):
    good = {"host_end": "nri-11111111", "bridge": "nbr-aaaaaaaa", "address": "10.41.0.3/24",
            "mac": "02:4e:42:00:00:02"}  # fmt: skip
    with pytest.raises(ValidationError):
        Leg(**{**good, **bad})


def test_forward_ports_and_protocols_are_checked():
    with pytest.raises(ValidationError):
        Forward(protocol="sctp", external="203.0.113.8", external_port=1, internal="10.0.0.1",
                internal_port=1)  # fmt: skip
    with pytest.raises(ValidationError):
        Forward(protocol="tcp", external="203.0.113.8", external_port=0, internal="10.0.0.1",
                internal_port=1)  # fmt: skip
