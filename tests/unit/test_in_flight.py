"""Work that API calls do outside tasks (a storage pool being made or deleted, a
network getting its subnets, an image upload) is undone after a crash only when
the controller doing it is gone: never while another live controller is doing it
(several controllers on one database), at once when it is this controller's own
from before it restarted. On SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import time
from datetime import timedelta

from sqlalchemy import update

from nubis.db.models import Image, Network, StoragePool
from nubis.tasks.in_flight import InFlight
from nubis.tasks.leadership import Leadership

LEASE = timedelta(seconds=1)


def another_controller(platform) -> InFlight:
    """A second controller on the same database, with a short lease."""
    return InFlight(Leadership(platform.db, "ctl-other", LEASE))


def before_restart(platform) -> InFlight:
    """This controller's previous life (the same id): the leases it held then."""
    return InFlight(Leadership(platform.db, platform.engine.worker_id, timedelta(seconds=30)))


def state_of(platform, model, row_id: str, field: str = "state") -> str | None:
    with platform.db.read() as s:
        row = s.get(model, row_id)
        return None if row is None else getattr(row, field)


def test_a_network_another_controller_works_on_is_undone_only_once_it_died(callers, platform):
    member = callers["member"]
    net = member.post("/networks", json={"name": "busy", "mode": "isolated"}).json()
    other = another_controller(platform)
    # the other controller is giving the network its subnets (the lease first, then the row)
    assert other.begin("network", net["id"])
    with platform.db.begin() as s:
        s.execute(update(Network).where(Network.id == net["id"]).values(state="adding"))
    platform.networks.undo_interrupted()  # this controller's start-up, or a reconciliation
    assert state_of(platform, Network, net["id"]) == "adding"
    refused = member.delete("/networks/busy")
    assert refused.status_code == 409 and "under way" in refused.json()["error"]["message"]
    assert state_of(platform, Network, net["id"]) == "adding"
    time.sleep(LEASE.total_seconds() + 0.1)  # the other controller died: its lease passes
    platform.networks.undo_interrupted()
    assert state_of(platform, Network, net["id"]) == "empty"
    # the lease of the undone work is gone with it: the network is anyone's again
    assert member.delete("/networks/busy").status_code == 204


def test_a_controllers_own_half_done_work_is_undone_at_its_restart(callers, platform):
    member = callers["member"]
    net = member.post("/networks", json={"name": "mine", "mode": "isolated"}).json()
    assert before_restart(platform).begin("network", net["id"])  # its lease still runs
    with platform.db.begin() as s:
        s.execute(update(Network).where(Network.id == net["id"]).values(state="creating"))
    platform.networks.undo_interrupted()
    assert state_of(platform, Network, net["id"]) is None  # a half-made network: removed


def test_an_upload_another_controller_receives_is_not_queued_again(platform):
    with platform.db.begin() as s:
        image_id = platform.images.reserve(s, "uploading", None).id
    other = another_controller(platform)
    assert other.begin("image", image_id)
    with platform.db.begin() as s:
        s.execute(update(Image).where(Image.id == image_id).values(status="saving"))
    assert platform.images.requeue_interrupted(platform.db) == 0
    assert state_of(platform, Image, image_id, "status") == "saving"
    time.sleep(LEASE.total_seconds() + 0.1)
    assert platform.images.requeue_interrupted(platform.db) == 1
    assert state_of(platform, Image, image_id, "status") == "queued"


def test_a_pool_another_controller_is_deleting_stays(callers, platform, tmp_path):
    admin = callers["system_admin"]
    body = {"name": "shared", "kind": "dir", "path": str(tmp_path / "p"), "host": "fake"}
    pool = admin.post("/storage-pools", json=body).json()
    other = another_controller(platform)
    assert other.begin("pool", pool["id"])
    with platform.db.begin() as s:
        s.execute(update(StoragePool).where(StoragePool.id == pool["id"]).values(state="deleting"))
    platform.pools.undo_interrupted()
    assert state_of(platform, StoragePool, pool["id"]) == "deleting"
    time.sleep(LEASE.total_seconds() + 0.1)
    platform.pools.undo_interrupted()  # its delete is finished
    assert state_of(platform, StoragePool, pool["id"]) is None


def test_a_half_written_file_goes_unless_it_is_being_written(platform):
    # a shared image store: another controller writes one file, a dead one left another
    store = platform.images.store
    dead, live = store / "dead.partial", store / "live.partial"
    for path in (dead, live):
        path.write_bytes(b"half")
    an_hour_ago = time.time() - 3600
    os.utime(dead, (an_hour_ago, an_hour_ago))
    assert platform.images.cleanup_partials(min_age=30) == 1
    assert not dead.exists() and live.exists()
