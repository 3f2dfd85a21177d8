"""A Nubis instance as Nova shows a server (microversion 2.1 fields): status and
power state mapped, addresses from its ports, image and flavor as links."""

from __future__ import annotations

import hashlib
from typing import Any

from fastapi import Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from nubis.api.openstack import links
from nubis.db.models import (
    Cluster,
    Host,
    Instance,
    Network,
    Port,
    PortSecurityGroup,
    SecurityGroup,
    VolumeAttachment,
    Zone,
)

# Nubis status -> (Nova status, vm_state, power_state)
STATUS = {
    "building": ("BUILD", "building", 0),
    "running": ("ACTIVE", "active", 1),
    "stopped": ("SHUTOFF", "stopped", 4),
    "paused": ("PAUSED", "paused", 3),
    # suspended to disk (a managed save): no QEMU runs, as Nova's libvirt driver reports
    "suspended": ("SUSPENDED", "suspended", 4),
    "error": ("ERROR", "error", 0),
    # Nova keeps a server's status while it is being deleted (task_state "deleting")
    # and shows DELETED only once it is gone: clients wait for that or for a 404
    "deleting": ("ACTIVE", "active", 0),
}
# a task in flight that Nova shows as the status itself
TASK_STATUS = {
    "rebooting": "REBOOT",
    "migrating": "MIGRATING",
    "resizing": "RESIZE",
    "confirming": "VERIFY_RESIZE",
    "reverting-resize": "REVERT_RESIZE",
}
# Nubis task_state -> Nova OS-EXT-STS:task_state
TASK_STATE = {
    "starting": "powering-on",
    "stopping": "powering-off",
    "rebooting": "rebooting",
    "pausing": "pausing",
    "suspending": "suspending",
    "resuming": "unpausing",
    "deleting": "deleting",
    "migrating": "migrating",
    "resizing": "resize_prep",
    "confirming": "resize_confirming",
    "reverting-resize": "resize_reverting",
}
# Nova status filter -> Nubis status
STATUS_FILTER = {
    nova.lower(): nubis for nubis, (nova, _vm, _power) in STATUS.items() if nubis != "deleting"
}
DEFAULT_ZONE = "nova"


def awaits_confirmation(instance: Instance) -> bool:
    """A resize done and waiting for confirmResize or revertResize (Nova: resized)."""
    return (
        instance.resize_from is not None
        and instance.task_state is None
        and instance.status in ("running", "stopped")
    )


def nova_status(instance: Instance) -> str:
    if instance.task_state in TASK_STATUS:
        return TASK_STATUS[instance.task_state]
    if awaits_confirmation(instance):
        return "VERIFY_RESIZE"
    return STATUS.get(instance.status, ("ERROR", "error", 0))[0]


class Related:
    """What the views of a page of servers need, read in a few queries."""

    def __init__(self, session: Session, instances: list[Instance]) -> None:
        ids = [i.id for i in instances]
        self.ports: dict[str, list[Port]] = {i: [] for i in ids}
        self.networks: dict[str, str] = {}
        self.groups: dict[str, list[str]] = {i: [] for i in ids}
        self.volumes: dict[str, list[str]] = {i: [] for i in ids}
        self.hosts: dict[str, tuple[str, str]] = {}
        if not ids:
            return
        ports = session.scalars(
            select(Port).where(Port.instance_id.in_(ids)).order_by(Port.position)
        ).all()
        for port in ports:
            self.ports[port.instance_id or ""].append(port)
        net_ids = {p.network_id for p in ports}
        if net_ids:
            rows = session.execute(select(Network.id, Network.name).where(Network.id.in_(net_ids)))
            self.networks = {i: n for i, n in rows}
        port_owner = {p.id: p.instance_id for p in ports}
        if port_owner:
            rows = session.execute(
                select(PortSecurityGroup.port_id, SecurityGroup.name)
                .join(SecurityGroup, SecurityGroup.id == PortSecurityGroup.group_id)
                .where(PortSecurityGroup.port_id.in_(port_owner))
            )
            for port_id, name in rows:
                names = self.groups[port_owner[port_id] or ""]
                if name not in names:
                    names.append(name)
        rows = session.execute(
            select(VolumeAttachment.instance_id, VolumeAttachment.volume_id).where(
                VolumeAttachment.instance_id.in_(ids)
            )
        )
        for instance_id, volume_id in rows:
            self.volumes[instance_id].append(volume_id)
        host_ids = {i.host_id for i in instances if i.host_id}
        if host_ids:
            rows = session.execute(
                select(Host.id, Host.name, Zone.name)
                .outerjoin(Cluster, Cluster.id == Host.cluster_id)
                .outerjoin(Zone, Zone.id == Cluster.zone_id)
                .where(Host.id.in_(host_ids))
            )
            self.hosts = {i: (h, z or DEFAULT_ZONE) for i, h, z in rows}


def addresses(related: Related, instance: Instance) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for port in related.ports.get(instance.id, []):
        name = related.networks.get(port.network_id, port.network_id)
        out.setdefault(name, []).append(
            {
                "version": 4,
                "addr": port.ip,
                "OS-EXT-IPS:type": "fixed",
                "OS-EXT-IPS-MAC:mac_addr": port.mac,
            }
        )
    return out


def _ref(request: Request, collection: str, item_id: str | None) -> dict[str, Any] | str:
    if item_id is None:
        return ""
    href = f"{links.service_url(request, 'compute')}/{collection}/{item_id}"
    return {"id": item_id, "links": [{"rel": "bookmark", "href": href}]}


def brief(request: Request, instance: Instance) -> dict[str, Any]:
    return {
        "id": instance.id,
        "name": instance.name,
        "links": links.self_links(request, "compute", "servers", instance.id),
    }


def detail(request: Request, related: Related, instance: Instance, admin: bool) -> dict[str, Any]:
    _nova, vm_state, power = STATUS.get(instance.status, ("ERROR", "error", 0))
    if awaits_confirmation(instance):
        vm_state = "resized"
    host_name, zone = related.hosts.get(instance.host_id or "", (None, DEFAULT_ZONE))
    host_key = f"{instance.project_id}{host_name}" if host_name else ""
    view: dict[str, Any] = {
        **brief(request, instance),
        "status": nova_status(instance),
        "tenant_id": instance.project_id,
        "user_id": None,
        "metadata": instance.properties or {},
        "hostId": hashlib.sha224(host_key.encode()).hexdigest() if host_name else "",
        "image": _ref(request, "images", instance.image_id),
        "flavor": _ref(request, "flavors", instance.flavor_id),
        "created": links.timestamp(instance.created_at),
        "updated": links.timestamp(instance.updated_at),
        "addresses": addresses(related, instance),
        "accessIPv4": "",
        "accessIPv6": "",
        "progress": 0,
        "config_drive": "True" if instance.seed_format == "configdrive" else "",
        "key_name": instance.key_name,
        "OS-DCF:diskConfig": "MANUAL",
        "OS-EXT-AZ:availability_zone": zone,
        "OS-EXT-STS:vm_state": vm_state,
        "OS-EXT-STS:power_state": power,
        "OS-EXT-STS:task_state": TASK_STATE.get(instance.task_state or ""),
        "OS-SRV-USG:launched_at": links.timestamp(instance.created_at),
        "OS-SRV-USG:terminated_at": None,
        "os-extended-volumes:volumes_attached": [
            {"id": v} for v in related.volumes.get(instance.id, [])
        ],
        "security_groups": [{"name": n} for n in related.groups.get(instance.id, [])],
    }
    if admin:
        view["OS-EXT-SRV-ATTR:host"] = host_name
        view["OS-EXT-SRV-ATTR:hypervisor_hostname"] = host_name
        view["OS-EXT-SRV-ATTR:instance_name"] = instance.domain_name
    if instance.status == "error":
        view["fault"] = {
            "code": 500,
            "message": instance.error or "the instance failed",
            "created": links.timestamp(instance.updated_at),
        }
    return view
