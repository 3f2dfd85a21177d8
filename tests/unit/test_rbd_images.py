"""The options qemu-img gets for an RBD image: the pool, user, monitors and the key as
a secret object's id (never the key itself), and names Nubis makes only."""

from __future__ import annotations

import pytest

from nubis.drivers.libvirt.volumes import PoolSpec
from nubis.drivers.rbd_images import SECRET_ID, RbdError, image_opts

KEY = bytes(range(28))


def spec(**changes) -> PoolSpec:
    values = {
        "name": "nubis-pool-1",
        "type": "rbd",
        "path": "nubis",
        "source_name": "nubis",
        "monitors": (("10.0.0.11", 6789), ("10.0.0.12", 3300)),
        "auth_user": "nubis",
        "secret": KEY,
    }
    return PoolSpec(**{**values, **changes})


def test_options_name_the_image_the_monitors_and_the_key_by_id():
    opts = image_opts(spec(), "nubis-vol-1.img", "nubis-vsnap-2").split(",")
    assert opts == [
        "driver=rbd",
        "pool=nubis",
        "image=nubis-vol-1.img",
        "user=nubis",
        f"key-secret={SECRET_ID}",
        "server.0.host=10.0.0.11",
        "server.0.port=6789",
        "server.1.host=10.0.0.12",
        "server.1.port=3300",
        "snapshot=nubis-vsnap-2",
    ]
    assert KEY.hex() not in ",".join(opts)


@pytest.mark.parametrize(
    ("pool", "image", "snapshot"),
    [
        (spec(type="dir"), "nubis-vol-1.img", None),
        (spec(auth_user=None), "nubis-vol-1.img", None),
        (spec(), "x,driver=file,filename=/etc/shadow", None),
        (spec(), "nubis-vol-1.img", "a,b"),
        (spec(), "pool/other@snap", None),
    ],
)
def test_what_is_not_an_rbd_image_of_the_pool_is_refused(pool, image, snapshot):
    with pytest.raises(RbdError):
        image_opts(pool, image, snapshot)
