"""Bandwidth limits: the shapes accepted, and the clear refusals."""

import pytest

from nubis.drivers.libvirt.domain_xml import Rate
from nubis.services.core.errors import BadRequest
from nubis.services.network.qos import check_bandwidth, rates


def test_limits_are_kept_in_their_shape_and_become_libvirt_rates():
    value = {"inbound": {"average": 1000, "peak": 2000, "burst": 256}, "outbound": {"average": 50}}
    assert check_bandwidth(value) == value
    assert rates(value) == (Rate(1000, 2000, 256), Rate(50))
    assert check_bandwidth({}) is None and rates(None) == (None, None)
    assert check_bandwidth({"inbound": {"average": 10, "peak": None}}) == {
        "inbound": {"average": 10}
    }


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"sideways": {"average": 1}}, "bandwidth must be"),
        ({"inbound": {"peak": 10}}, r"average \(KiB/s\) is required"),
        ({"inbound": {"average": 0}}, "between 1 and"),
        ({"inbound": {"average": 1.5}}, "whole number"),
        ({"inbound": {"average": True}}, "whole number"),
        ({"inbound": {"average": 100, "peak": 50}}, "peak must not be below"),
        ({"outbound": {"average": 100, "peak": 200}}, "outbound.peak is not supported"),
        ({"inbound": {"average": 100, "floor": 5}}, "takes average, peak and burst"),
        ({"inbound": {"average": 10**12}}, "between 1 and"),
    ],
)
def test_bad_limits_are_refused(value, message):
    with pytest.raises(BadRequest, match=message):
        check_bandwidth(value)
