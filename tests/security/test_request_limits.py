"""Attacks on the server's memory and the audit log: oversized JSON bodies (announced
or chunked), floods of made-up paths, and parameters built to bloat audit records."""

import json

from sqlalchemy import func, select

from nubis.db.models import AuditRecord, KeyPair
from tests.unit.identity_world import API
from tests.unit.test_api_contract import qcow2

MIB = 1024 * 1024


def audit_count(platform) -> int:
    with platform.db.read() as s:
        return s.scalar(select(func.count()).select_from(AuditRecord)) or 0


def keypairs(platform) -> int:
    with platform.db.read() as s:
        return s.scalar(select(func.count()).select_from(KeyPair)) or 0


def test_oversized_bodies_are_refused_before_parsing(client, platform, callers):
    member = callers["member"]
    huge = json.dumps({"name": "k", "public_key": "x" * (2 * MIB)}).encode()
    before = (keypairs(platform), audit_count(platform))
    announced = member.post(
        "/key-pairs", content=huge, headers={"Content-Type": "application/json"}
    )
    assert announced.status_code == 413, announced.text
    assert "larger than 1048576 bytes" in announced.json()["error"]["message"]

    def chunks():  # no Content-Length: counted as it arrives
        for i in range(0, len(huge), 64 * 1024):
            yield huge[i : i + 64 * 1024]

    chunked = member.post(
        "/key-pairs", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert chunked.status_code == 413, chunked.text
    # nothing made; the refused attempt on a real route is in the audit log, as 413
    assert (keypairs(platform), audit_count(platform)) == (before[0], before[1] + 1)
    with platform.db.read() as s:
        last = s.scalars(select(AuditRecord).order_by(AuditRecord.created_at.desc())).first()
        assert (last.action, last.status_code) == ("POST /key-pairs", 413)
    # a body just under the limit is taken as usual
    ok = member.post("/key-pairs", json={"name": "small"})
    assert ok.status_code == 201


def test_streamed_uploads_are_not_held_to_the_json_limit(client, callers, tmp_path):
    data = qcow2(tmp_path, "big.qcow2") + b"\0" * (3 * MIB)  # a 3 MiB+ upload
    resp = callers["member"].upload("streamed", data)
    assert resp.status_code in (201, 400), resp.text  # taken (or refused for its content)
    assert resp.status_code != 413


def test_made_up_paths_write_no_audit_record(client, platform, callers):
    before = audit_count(platform)
    for i in range(50):
        assert client.post(f"{API}/no-such-thing-{i}", json={"x": i}).status_code == 404
        assert client.delete(f"/openstack/compute/v2.1/nothing-{i}").status_code == 404
    assert audit_count(platform) == before
    # a real route is still audited, even when refused
    assert client.post(f"{API}/key-pairs", json={"name": "k"}).status_code == 401
    assert audit_count(platform) == before + 1


def test_audited_parameters_are_bounded(client, platform, callers):
    bloated = {f"field{i}": {"deep": {"deeper": {"deepest": {"x": i}}}} for i in range(5000)}
    bloated["name"] = "bloat"
    callers["member"].post("/key-pairs", json=bloated)
    with platform.db.read() as s:
        record = s.scalars(
            select(AuditRecord)
            .where(AuditRecord.action == "POST /key-pairs")
            .order_by(AuditRecord.created_at.desc())
        ).first()
    assert record is not None
    assert len(json.dumps(record.params)) <= 4096


def test_audit_csv_cells_cannot_run_as_formulas(client, platform, callers):
    """A login tried as '=HYPERLINK(...)' is recorded as it was tried; in the CSV
    export the cell is quoted, so a spreadsheet shows it instead of running it."""
    import csv
    import io

    for name in ('=HYPERLINK("http://evil.example","x")', "+1+1", "-1", "@SUM(A1)"):
        client.post(f"{API}/auth/tokens", json={"username": name, "password": "nope"})
    exported = callers["auditor"].get("/audit/export", params={"format": "csv"})
    assert exported.status_code == 200
    names = [row["username"] for row in csv.DictReader(io.StringIO(exported.text))]
    tried = [n for n in names if n and n.lstrip("'")[:1] in "=+-@"]
    assert len(tried) == 4 and all(n.startswith("'") for n in tried), tried
