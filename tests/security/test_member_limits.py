"""Attack: a project member lifting what its project pays for: its NICs' bandwidth
above the flavor's, or choosing the host, cluster or storage pool (which would let
it pile onto a host or fill a pool the scheduler keeps it from)."""

import pytest

from nubis.services.core.errors import Forbidden
from nubis.services.network import qos

CAP = {"inbound": {"average": 1000, "peak": 2000, "burst": 500}, "outbound": {"average": 800}}


@pytest.mark.parametrize(
    "asked,allowed",
    [
        (None, CAP),  # nothing asked: the flavor's
        ({"inbound": {"average": 500}}, {**CAP, "inbound": {"average": 500}}),
        (
            {"outbound": {"average": 800, "burst": 800}},
            {**CAP, "outbound": {"average": 800, "burst": 800}},
        ),
        ({"inbound": {"average": 1001}}, None),
        ({"inbound": {"average": 900, "peak": 2001}}, None),
        ({"inbound": {"average": 900, "burst": 501}}, None),
        ({"outbound": {"average": 800, "burst": 801}}, None),  # no burst: the average caps it
    ],
)
def test_a_member_only_tightens_the_flavors_limits(asked, allowed):
    if allowed is None:
        with pytest.raises(Forbidden, match="only a system administrator lifts"):
            qos.for_port(asked, CAP, lift=False)
    else:
        assert qos.for_port(asked, CAP, lift=False) == allowed
    # the system administrator sets what it wants; a flavor without limits binds nobody
    lifted = {"inbound": {"average": 5000}}
    assert qos.for_port(lifted, CAP, lift=True) == lifted
    assert qos.for_port(lifted, None, lift=False) == lifted


def test_members_cannot_lift_limits_or_choose_placement(client, platform, callers, tmp_path):
    from tests.unit.test_api_contract import qcow2

    member, sysadmin = callers["member"], callers["system_admin"]
    capped = {"name": "capped", "vcpus": 1, "memory_mib": 128, "disk_gib": 1, "bandwidth": CAP}
    assert sysadmin.post("/flavors", json=capped).status_code == 201
    image = member.upload("img", qcow2(tmp_path, "i.qcow2")).json()
    net = member.post(
        "/networks", json={"name": "n", "mode": "isolated", "subnets": [{"cidr": "10.9.0.0/24"}]}
    )
    assert net.status_code == 201, net.text
    base = {"name": "vm", "image": image["id"], "flavor": "capped"}
    for extra in ({"host": "fake"}, {"cluster": "default"}):
        refused = member.post("/instances", json=base | extra)
        assert refused.status_code == 403 and "scheduler places" in refused.text
    lifted = member.post(
        "/instances",
        json=base | {"networks": [{"network": "n", "bandwidth": {"inbound": {"average": 9999}}}]},
    )
    assert lifted.status_code == 403, lifted.text
    assert member.get("/instances").json()["total"] == 0
    made = member.post("/instances", json=base | {"networks": [{"network": "n"}]})
    assert made.status_code == 202, made.text
    port = member.get(f"/instances/{made.json()['id']}/ports").json()[0]
    assert port["bandwidth"] == CAP  # the flavor's
    # a port at rest (the instance is not placed on a running host here)
    higher = member.put(f"/ports/{port['id']}/bandwidth", json={"inbound": {"average": 9999}})
    assert higher.status_code == 403
    # a volume's pool is the scheduler's too
    pool_pick = member.post("/volumes", json={"name": "v", "size_gib": 1, "pool": "anything"})
    assert pool_pick.status_code == 403 and "storage pool is for system administrators" in (
        pool_pick.text
    )
