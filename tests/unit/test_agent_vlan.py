"""The host setup of a VLAN provider network: the iproute2 commands the agent runs,
from what the host has to what the network wants (this machine's kernel has no
802.1Q, so the commands are checked here and the refusal in the integration tests)."""

import pytest

from nubis.agent.overlay import AgentError
from nubis.agent.vlan import VlanState, plan

DEVICE = "nvl-0a0b0c0d"
STATE = VlanState(interface="eth1", vid=100, bridge="nbr-0a0b0c0d")
ETH1 = {"ifname": "eth1"}


def vlan_link(vid: int, on: str = "eth1") -> dict:
    return {
        "ifname": DEVICE,
        "link": on,
        "linkinfo": {"info_kind": "vlan", "info_data": {"id": vid}},
    }


def test_a_fresh_host_gets_the_bridge_and_the_vlan_device():
    assert plan(DEVICE, STATE, {"eth1": ETH1, "nbr-0a0b0c0d": None, DEVICE: None}) == [
        ["ip", "link", "add", "nbr-0a0b0c0d", "type", "bridge", "stp_state", "0"],
        ["ip", "link", "add", "link", "eth1", "name", DEVICE, "type", "vlan", "id", "100"],
        ["ip", "link", "set", "dev", DEVICE, "master", "nbr-0a0b0c0d", "up"],
        ["ip", "link", "set", "dev", "nbr-0a0b0c0d", "up"],
    ]


def test_a_host_that_has_it_only_sets_it_up_again():
    have = {"eth1": ETH1, "nbr-0a0b0c0d": {"ifname": "nbr-0a0b0c0d"}, DEVICE: vlan_link(100)}
    assert plan(DEVICE, STATE, have) == [
        ["ip", "link", "set", "dev", DEVICE, "master", "nbr-0a0b0c0d", "up"],
        ["ip", "link", "set", "dev", "nbr-0a0b0c0d", "up"],
    ]


@pytest.mark.parametrize("stale", [vlan_link(200), vlan_link(100, on="eth2")])
def test_a_device_with_another_vlan_or_interface_is_made_again(stale):
    have = {"eth1": ETH1, "nbr-0a0b0c0d": {"ifname": "nbr-0a0b0c0d"}, DEVICE: stale}
    commands = plan(DEVICE, STATE, have)
    assert commands[:2] == [
        ["ip", "link", "del", "dev", DEVICE],
        ["ip", "link", "add", "link", "eth1", "name", DEVICE, "type", "vlan", "id", "100"],
    ]


def test_refusals():
    with pytest.raises(AgentError, match="interface eth1 does not exist"):
        plan(DEVICE, STATE, {"eth1": None})
    with pytest.raises(AgentError, match="not a VLAN device name"):
        plan("eth0", STATE, {"eth1": ETH1})
    for bad in ({"vid": 0}, {"vid": 4095}, {"interface": "eth1; reboot"}):
        with pytest.raises(ValueError):
            VlanState(**{**STATE.model_dump(), **bad})
