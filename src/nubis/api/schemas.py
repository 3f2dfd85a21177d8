"""Request and response bodies of the native REST API."""

from __future__ import annotations

from datetime import datetime
from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from nubis.services.lookup import Page

T = TypeVar("T")


class Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class PageOut(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int

    @classmethod
    def of(cls, page: Page, item: type[Out]) -> PageOut:
        return PageOut[item](  # type: ignore[valid-type]
            items=[item.model_validate(row) for row in page.items],
            total=page.total,
            limit=page.limit,
            offset=page.offset,
        )


class TokenIn(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class TokenOut(BaseModel):
    token: str
    expires_at: datetime


class HostIn(BaseModel):
    name: str
    uri: str
    username: str | None = None
    password: str | None = Field(default=None, repr=False)
    virt_type: str | None = Field(default=None, description="override: kvm or qemu")


class HostOut(Out):
    id: str
    name: str
    uri: str
    state: str
    enabled: bool
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
    created_at: datetime


class ImageImportIn(BaseModel):
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
    created_at: datetime


class FlavorIn(BaseModel):
    name: str
    vcpus: int
    memory_mib: int
    disk_gib: int


class FlavorOut(Out):
    id: str
    name: str
    vcpus: int
    memory_mib: int
    disk_gib: int
    created_at: datetime


class InstanceIn(BaseModel):
    name: str
    image: str = Field(description="image id or name")
    flavor: str = Field(description="flavor id or name")
    host: str | None = Field(default=None, description="host id or name (optional)")


class InstanceOut(Out):
    id: str
    name: str
    project_id: str
    host_id: str | None
    image_id: str | None
    flavor_id: str | None
    vcpus: int
    memory_mib: int
    disk_gib: int
    status: str
    task_state: str | None
    error: str | None
    created_at: datetime
    updated_at: datetime


class InstanceAccepted(InstanceOut):
    task_id: str


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
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
