"""Is the platform in a true state? What the fault-injection tests check after every
recovery: nothing in flight, every record matching libvirt, nothing orphaned."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import libvirt

from tests.integration.server import NubisServer, libvirt_leftovers

STATES = {
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTOFF: "stopped",
}
INTERRUPTED = "interrupted by a control-plane restart"


@dataclass
class Made:
    """Everything a test created, deleted or not: what must exist, or be gone."""

    instances: set[str] = field(default_factory=set)
    volumes: set[str] = field(default_factory=set)
    pool_dirs: list[str] = field(default_factory=list)  # storage pools' directories


def all_items(srv: NubisServer, path: str, **params: str) -> list[dict]:
    resp = srv.client.get(path, params={"limit": 1000, **params})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    return body if isinstance(body, list) else body["items"]


def wait_settled(srv: NubisServer, timeout: float = 120) -> None:
    """No task queued or running, no instance or volume with an operation in flight."""
    deadline = time.monotonic() + timeout
    busy: list[str] = []
    while time.monotonic() < deadline:
        busy = [
            f"task {t['kind']} {t['status']} (step {t['step']})"
            for status in ("queued", "running")
            for t in all_items(srv, "/tasks", status=status)
        ]
        busy += [
            f"instance {i['name']} {i['task_state']}"
            for i in all_items(srv, "/instances")
            if i["task_state"] is not None
        ]
        busy += [
            f"volume {v['name']} {v['task_state']}"
            for v in all_items(srv, "/volumes")
            if v["task_state"] is not None
        ]
        if not busy:
            return
        time.sleep(0.3)
    raise AssertionError(f"still in flight after {timeout} s: {busy}")


def domain_states(uris: dict[str, str], ids: set[str]) -> dict[str, dict[str, str]]:
    """Per host name: the libvirt state of each of ``ids`` defined there."""
    found: dict[str, dict[str, str]] = {}
    for name, uri in uris.items():
        conn = libvirt.open(uri)
        try:
            found[name] = {}
            for iid in ids:
                try:
                    dom = conn.lookupByUUIDString(iid)
                except libvirt.libvirtError:
                    continue
                state = STATES.get(dom.state()[0], "other")
                if state == "stopped" and dom.hasManagedSaveImage(0):
                    state = "suspended"  # shut off with its memory saved
                found[name][iid] = state
        finally:
            conn.close()
    return found


def check_true_state(srv: NubisServer, made: Made, uris: dict[str, str]) -> None:
    """Every instance is where the database says, in the state libvirt reports, on one
    host only; deleted ones left nothing; addresses, claims and quota usage add up."""
    wait_settled(srv)
    hosts = {h["id"]: h for h in all_items(srv, "/hosts")}
    instances = {i["id"]: i for i in all_items(srv, "/instances")}
    volumes = {v["id"]: v for v in all_items(srv, "/volumes")}
    states = domain_states(uris, made.instances)
    problems = []
    for iid in made.instances:
        where = [name for name, found in states.items() if iid in found]
        inst = instances.get(iid)
        if inst is None:
            if where:
                problems.append(f"deleted instance {iid} still defined on {where}")
            left = [x for uri in uris.values() for x in libvirt_leftovers(iid, uri)]
            if left:
                problems.append(f"deleted instance {iid} left {left}")
            continue
        host = hosts[inst["host_id"]]["name"]
        if host not in uris:
            continue  # a host that is down: nothing to compare with
        if where != [host]:
            problems.append(f"instance {inst['name']} recorded on {host}, defined on {where}")
            continue
        actual = states[host][iid]
        if inst["status"] != actual:
            problems.append(f"instance {inst['name']} is {inst['status']}, libvirt: {actual}")
        ports = all_items(srv, f"/instances/{iid}/ports")
        if any(p["instance_id"] != iid for p in ports):
            problems.append(f"instance {inst['name']} lists ports of another instance")
    for vid in made.volumes:
        if vid not in volumes:
            left = [x for uri in uris.values() for x in libvirt_leftovers(vid, uri)]
            left += [f for d in made.pool_dirs for f in os.listdir(d) if vid in f]
            if left:
                problems.append(f"deleted volume {vid} left {left}")
        elif volumes[vid]["status"] not in ("available", "in-use"):
            problems.append(f"volume {volumes[vid]['name']} is {volumes[vid]['status']}")
    # addresses: every port belongs to an instance that exists, no address twice
    for net in all_items(srv, "/networks"):
        ports = all_items(srv, f"/networks/{net['id']}/ports")
        orphans = [p["ip"] for p in ports if p["instance_id"] not in instances]
        if orphans:
            problems.append(f"network {net['name']}: addresses of no instance {orphans}")
        ips = [p["ip"] for p in ports]
        if len(ips) != len(set(ips)):
            problems.append(f"network {net['name']}: an address given twice {sorted(ips)}")
    # the scheduler's claims are the sum of what each host runs
    for host in hosts.values():
        mine = [i for i in instances.values() if i["host_id"] == host["id"]]
        if host["instance_count"] != len(mine) or host["alloc_vcpus"] != sum(
            i["vcpus"] for i in mine
        ):
            problems.append(
                f"host {host['name']} claims {host['instance_count']} instance(s) / "
                f"{host['alloc_vcpus']} vCPUs, runs {len(mine)} / {sum(i['vcpus'] for i in mine)}"
            )
    usage = srv.client.get("/quotas").json()["quotas"]
    counted = {
        "instances": len(instances),
        "vcpus": sum(i["vcpus"] for i in instances.values()),
        "volumes": len(volumes),
    }
    for resource, count in counted.items():
        used = usage[resource]["in_use"]
        if used != count:
            problems.append(f"quota usage of {resource} is {used}, {count} exist")
    assert problems == [], problems
