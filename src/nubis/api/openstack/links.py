"""URLs the OpenStack clients follow: the facade's root as the caller reached it, the
endpoints of the service catalog, and ``links``/``next`` of a paginated list."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, Query, Request

from nubis.services.core.lookup import MAX_LIMIT, PageRequest

PREFIX = "/openstack"
REGION = "RegionOne"
# service type -> (path under PREFIX, catalog name); {project_id} is filled in per token
SERVICES = {
    "identity": ("/identity/v3", "keystone"),
    "compute": ("/compute/v2.1", "nova"),
    "image": ("/image", "glance"),
    "network": ("/network", "neutron"),
    "block-storage": ("/volume/v3/{project_id}", "cinder"),
    "volumev3": ("/volume/v3/{project_id}", "cinderv3"),
}


def root(request: Request) -> str:
    """``http://host:port/openstack`` as the caller addressed us."""
    url = request.url
    return f"{url.scheme}://{url.netloc}{PREFIX}"


def service_url(request: Request, service: str, project_id: str = "") -> str:
    path, _name = SERVICES[service]
    return root(request) + path.format(project_id=project_id)


def timestamp(when: datetime | None) -> str | None:
    """ISO 8601 in UTC with a ``Z``, as the OpenStack services write times."""
    if when is None:
        return None
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def self_links(request: Request, service: str, collection: str, item_id: str) -> list[dict]:
    base = service_url(request, service)
    href = f"{base}/{collection}/{item_id}"
    return [{"rel": "self", "href": href}, {"rel": "bookmark", "href": href}]


@dataclass
class Paging:
    """``limit`` and ``marker`` (the id of the last item seen), as every list takes them."""

    limit: Annotated[int | None, Query(ge=0, le=MAX_LIMIT)] = None
    marker: str | None = None

    def page(self) -> PageRequest:
        return PageRequest(limit=self.limit or MAX_LIMIT, marker=self.marker)


PagingDep = Annotated[Paging, Depends()]


def truthy(flag: str | None) -> bool:
    """A query flag such as ``all_tenants`` (given without a value, or 1/true)."""
    return flag is not None and flag.lower() not in ("0", "false", "no")


def page_links(request: Request, key: str, items: list[Any], paging: Paging) -> dict[str, Any]:
    """``{"<key>_links": [next]}`` when the page was full, else nothing."""
    nxt = next_link(request, items, paging.limit)
    return {f"{key}_links": [{"rel": "next", "href": nxt}]} if nxt else {}


def next_link(request: Request, items: list[Any], limit: int | None) -> str | None:
    """The URL of the page after ``items`` when the page was full (marker paging)."""
    if not limit or len(items) < limit:
        return None
    query = [(k, v) for k, v in request.query_params.multi_items() if k != "marker"]
    query.append(("marker", items[-1].id))
    return f"{request.url.scheme}://{request.url.netloc}{request.url.path}?{urlencode(query)}"
