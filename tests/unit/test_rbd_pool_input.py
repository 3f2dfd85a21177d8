"""What an rbd pool request may hold: monitors as address[:port], a cephx key of the
right length; the rest is refused before any host is asked."""

from __future__ import annotations

import base64

import pytest

from nubis.services.core.errors import BadRequest
from nubis.services.storage.pools import check_cephx_key, monitor_addresses

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
