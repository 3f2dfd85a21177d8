"""What rbd and iscsi pool requests may hold: monitors and portals as address[:port],
a cephx key of the right length, IQNs; the rest is refused before any host is
asked."""

from __future__ import annotations

import base64

import pytest

from nubis.services.core.errors import BadRequest
from nubis.services.storage.pools import IQN_RE, check_cephx_key, monitor_addresses, portal_address

KEY = base64.b64encode(b"\x01\x00" + bytes(8) + b"\x10\x00" + bytes(range(16))).decode()


def test_monitors_take_the_default_port():
    assert monitor_addresses(["10.0.0.1", "mon-2.example:3300"]) == [
        ("10.0.0.1", 6789),
        ("mon-2.example", 3300),
    ]


@pytest.mark.parametrize(
    "monitors",
    [[], ["10.0.0.1:0"], ["10.0.0.1:70000"], ["-x"], ["a b"], ["x;rm -rf /"], [5], ["m"] * 10],
)
def test_bad_monitors_are_refused(monitors):
    with pytest.raises(BadRequest):
        monitor_addresses(monitors)


def test_a_cephx_key_is_28_bytes_of_base64():
    assert len(check_cephx_key(KEY)) == 28
    for bad in (None, "", "not base64!", base64.b64encode(b"short").decode(), KEY + "AAAA"):
        with pytest.raises(BadRequest):
            check_cephx_key(bad)


def test_a_portal_takes_the_iscsi_port_and_iqns_are_checked():
    assert portal_address("10.0.0.30") == ("10.0.0.30", 3260)
    assert portal_address("san.example:3261") == ("san.example", 3261)
    for bad in (None, "", "a b", "10.0.0.1:0"):
        with pytest.raises(BadRequest):
            portal_address(bad)
    assert IQN_RE.match("iqn.2026-12.org.nubis:pool-1234abcd")
    assert IQN_RE.match("iqn.2001-04.com.example")
    for bad in ("iqn.2026.org.x:y", "eui.02004567A425678D", "iqn.2026-12.org.x:a b", "x"):
        assert not IQN_RE.match(bad), bad
