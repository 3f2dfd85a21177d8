"""Request and response bodies of the native REST API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from nubis.services.core.lookup import Page

T = TypeVar("T")


class Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class In(BaseModel):
    """A request body: a field it does not know is an error, not silently dropped
    (``"nics"`` for ``"networks"`` would otherwise create an instance without NICs)."""

    model_config = ConfigDict(extra="forbid")


class PageOut(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int

    @classmethod
    def of(cls, page: Page, item: type[Out]) -> PageOut:
        return cls.with_items(page, [item.model_validate(row) for row in page.items])

    @classmethod
    def with_items(cls, page: Page, items: list[Any]) -> PageOut:
        """The page with its rows already turned into response items."""
        return PageOut(items=items, total=page.total, limit=page.limit, offset=page.offset)


class TokenIn(In):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)
    project: str | None = Field(default=None, max_length=64)  # default: the user's first


class TokenOut(BaseModel):
    token: str
    expires_at: datetime
    project_id: str
    roles: list[str]


class HostIn(In):
    name: str
    uri: str
    username: str | None = None
    password: str | None = Field(default=None, repr=False)
    virt_type: str | None = Field(default=None, description="override: kvm or qemu")
    cluster: str | None = Field(default=None, description="cluster id or name (default)")


class HostOut(Out):
    id: str
    name: str
    uri: str
    cluster_id: str | None
    state: str
    enabled: bool
    maintenance: str
    alloc_vcpus: int
    alloc_memory_mib: int
    alloc_disk_gib: int
    instance_count: int
    disk_gib: int
    virt_type: str
    virt_type_override: str | None
    arch: str
    cpu_model: str | None
    cpus: int
    sockets: int
    cores: int
    threads: int
    memory_mib: int
    hostname: str | None
    error: str | None
    last_seen_at: datetime | None
    unreachable_since: datetime | None = Field(description="since when libvirt fails checks")
    fence_method: str = Field(description="none, ipmi or devcluster")
    fenced_at: datetime | None
    agent_url: str | None = Field(description="the host's network agent (overlay networks)")
    created_at: datetime


class FencingIn(In):
    method: str = Field(description="none, ipmi (ipmitool lanplus) or devcluster")
    address: str | None = Field(default=None, description="ipmi: the BMC's address")
    username: str | None = Field(default=None, description="ipmi: BMC user")
    password: str | None = Field(default=None, description="ipmi: BMC password (kept encrypted)")
    host: str | None = Field(default=None, description="devcluster: the host's name (dev-<n>)")
    base: str | None = Field(default=None, description="devcluster: its directory")


class AgentIn(In):
    url: str | None = Field(
        default=None, max_length=255, description="http(s)://address:port; null: no agent"
    )
    token: str | None = Field(
        default=None, max_length=256, description="the agent's token (kept encrypted)"
    )


class ImageImportIn(In):
    name: str
    path: str = Field(description="a file on the Nubis server (administrators only)")


class ImageOut(Out):
    id: str
    name: str
    status: str
    disk_format: str | None
    virtual_size: int | None
    size: int | None
    sha256: str | None
    project_id: str | None  # None: public, every project sees it
    created_at: datetime


class RateIn(In):
    average: int = Field(description="KiB/s")
    peak: int | None = Field(default=None, description="KiB/s (inbound only)")
    burst: int | None = Field(default=None, description="KiB that may pass at peak speed")


class BandwidthIn(In):
    inbound: RateIn | None = Field(default=None, description="traffic to the guest")
    outbound: RateIn | None = Field(default=None, description="traffic from the guest")


def bandwidth_dict(value: BandwidthIn | None) -> dict | None:
    """The request's limits in the services' shape (unset fields left out)."""
    return value.model_dump(exclude_none=True) if value is not None else None


class FlavorIn(In):
    name: str
    vcpus: int
    memory_mib: int
    disk_gib: int
    bandwidth: BandwidthIn | None = Field(
        default=None, description="limits of every NIC of its instances (unless a NIC has its own)"
    )
    root_pool: str | None = Field(
        default=None,
        description="storage pool (id or name) its instances' root disks are made in "
        "(default: the cluster's root pool, else files on the host)",
    )


class FlavorOut(Out):
    id: str
    name: str
    vcpus: int
    memory_mib: int
    disk_gib: int
    bandwidth: dict | None
    root_pool_id: str | None
    created_at: datetime


class NicIn(In):
    network: str = Field(description="network id or name")
    ip: str | None = Field(default=None, description="a fixed address (default: the next free)")
    security_groups: list[str] | None = Field(
        default=None, description="groups by id or name (default: the project's 'default')"
    )
    bandwidth: BandwidthIn | None = Field(
        default=None, description="traffic limits of this NIC (default: the flavor's)"
    )


class InstanceIn(In):
    name: str
    image: str = Field(description="image id or name")
    flavor: str = Field(description="flavor id or name")
    host: str | None = Field(default=None, description="host id or name (optional)")
    rule_group: str | None = Field(default=None, description="rule group id or name")
    cluster: str | None = Field(default=None, description="place inside this cluster")
    clone: str = Field(
        default="linked",
        description="root disk: linked (qcow2 overlay of the image) or full (a copy)",
    )
    networks: list[NicIn] | None = Field(
        default=None,
        description="one NIC (port) per entry, in this order; left out: one on the "
        "project's network named 'default' if it has one; [] for none",
    )
    hostname: str | None = Field(
        default=None, description="the guest's host name (default: made from the name)"
    )
    key_pair: str | None = Field(
        default=None, description="key pair (id or name) whose public key the guest gets"
    )
    user_data: str | None = Field(
        default=None,
        description="cloud-init user-data: a script ('#!') or '#cloud-config', at most 64 KiB",
    )
    seed_format: str = Field(
        default="nocloud",
        description="cloud-init seed disc: nocloud (label cidata), configdrive (config-2), "
        "or none (no disc: an image without cloud-init; then no hostname, key_pair or "
        "user_data)",
    )
    ha: bool = Field(
        default=False,
        description="high availability: restarted elsewhere when its host fails, and in "
        "place when its QEMU process dies",
    )
    ha_priority: int = Field(default=0, description="0-1000: higher ones restart first")
    properties: dict[str, str] = Field(
        default_factory=dict,
        description="your own key-value pairs (at most 128, 255 characters each)",
    )
    root_pool: str | None = Field(
        default=None,
        description="system administrators: a storage pool (file or rbd) for the root disk, "
        "made there as a volume from the image and deleted with the instance",
    )
    root_offering: str | None = Field(
        default=None,
        description="a disk offering whose tags pick the storage pool of the root disk "
        "(anyone may; its secure_delete applies; size, format and provisioning come from "
        "the flavor and the image)",
    )


class InstanceHaIn(In):
    enabled: bool = Field(description="restart it when its host fails or its QEMU dies")
    priority: int = Field(default=0, description="0-1000: higher ones restart first")


class InstanceOut(Out):
    id: str
    name: str
    clone_mode: str
    cdrom_image_id: str | None = Field(description="the ISO in the CD-ROM drive, if any")
    boot_order: list[str] = Field(description="boot devices, first to last (disk, cdrom)")
    project_id: str
    host_id: str | None
    image_id: str | None
    flavor_id: str | None
    rule_group_id: str | None
    hostname: str | None
    key_name: str | None = Field(description="the key pair the guest was given, if any")
    seed_format: str | None = Field(description="cloud-init seed disc format")
    vcpus: int
    memory_mib: int
    disk_gib: int = Field(description="GiB of its host's disk pool (0: its root disk is a volume)")
    status: str
    task_state: str | None
    error: str | None
    ha_enabled: bool
    ha_priority: int
    properties: dict[str, str] = Field(description="the user's own key-value pairs")
    resize_from: dict[str, Any] | None = Field(
        default=None,
        description="a resize awaiting confirm-resize or revert-resize: the flavor and "
        "sizes the instance had before it",
    )
    created_at: datetime
    updated_at: datetime

    @field_validator("properties", mode="before")
    @classmethod
    def _none_is_empty(cls, value: object) -> object:
        return {} if value is None else value

    @field_validator("boot_order", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        return value.split(",") if isinstance(value, str) else value


class InstanceAccepted(InstanceOut):
    task_id: str


class MigrateIn(In):
    host: str | None = Field(default=None, description="target host id or name (optional)")
    max_downtime_ms: int | None = Field(
        default=None, description="longest pause of the guest at the switch-over (live)"
    )
    max_bandwidth_mib_s: int | None = Field(
        default=None, description="cap on the migration stream in MiB/s (live; default: none)"
    )


class EvacuateIn(In):
    confirm_host_down: bool = Field(
        default=False, description="the operator confirms the host is off (or fenced)"
    )


class CloneIn(In):
    name: str = Field(description="the new instance's name")


class CdromIn(In):
    image: str = Field(description="an ISO image, by id or name")


class BootOrderIn(In):
    order: list[str] = Field(description="boot devices, first to last: disk, cdrom")


class ResizeIn(In):
    flavor: str = Field(description="the new flavor, by id or name")


class TemplateIn(In):
    name: str = Field(description="the new image's name")


class TaskAccepted(BaseModel):
    task_id: str


class TaskOut(Out):
    id: str
    kind: str
    resource_type: str
    resource_id: str
    status: str
    progress: int
    step: str | None
    error: str | None
    attempts: int
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class ZoneIn(In):
    name: str


class ZoneOut(Out):
    id: str
    name: str
    created_at: datetime


class ClusterSettingsIn(In):
    cpu_ratio: float | None = Field(default=None, description="vCPUs per host thread (3.0)")
    memory_ratio: float | None = Field(default=None, description="1.0: no memory overcommit")
    disk_ratio: float | None = None
    disable_threshold: float | None = Field(
        default=None, description="share of overcommitted capacity above which no VM lands"
    )
    max_instances_per_host: int | None = None
    weigher: str | None = Field(default=None, description="spread (default) or pack")
    trust_shared_storage: bool | None = Field(
        default=None,
        description="the disk directory is shared although libvirt cannot detect it "
        "(a bind mount, the devcluster): allow live migration anyway",
    )
    ha_reserve: bool | None = Field(
        default=None,
        description="refuse new instances that would leave too little free capacity to "
        "restart the VMs of the largest host after it fails ((N-1) rule)",
    )
    ha_lockspace: str | None = Field(
        default=None,
        description="directory (as this server sees it) of the hosts' virtlockd lockspace "
        "on shared storage; held leases prove a VM still runs ('' removes it)",
    )
    root_pool: str | None = Field(
        default=None,
        description="storage pool (id or name) of the cluster where root disks go when "
        "neither the request nor the flavor names one ('' removes it: files on the host)",
    )


class ClusterIn(ClusterSettingsIn):
    name: str
    zone: str = Field(default="default", description="zone id or name")


class ClusterOut(Out):
    id: str
    name: str
    zone_id: str
    cpu_ratio: float
    memory_ratio: float
    disk_ratio: float
    disable_threshold: float
    max_instances_per_host: int | None
    weigher: str
    trust_shared_storage: bool
    ha_reserve: bool
    ha_lockspace: str | None
    root_pool_id: str | None
    created_at: datetime


class ResourceCapacity(BaseModel):
    physical: float
    overcommitted: float
    limit: float
    allocated: float
    free: float


class CapacityOut(BaseModel):
    hosts: int
    instances: int
    vcpus: ResourceCapacity
    memory_mib: ResourceCapacity
    disk_gib: ResourceCapacity


class RuleGroupIn(In):
    name: str
    policy: str = Field(description="affinity, anti-affinity or hosts")
    strict: bool = Field(default=True, description="refuse (true) or only prefer (false)")
    hosts: list[str] | None = Field(default=None, description="for policy 'hosts'")


class RuleGroupOut(Out):
    id: str
    name: str
    policy: str
    strict: bool
    host_ids: list[str]
    members: list[str] = []
    created_at: datetime
