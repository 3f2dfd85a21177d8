"""Where alarm webhooks may go: never into the platform's own networks.

A webhook is a request the server makes to an address a tenant chose, so without
care a tenant could make the server call what only it can reach: the hosts'
libvirt, a cloud's metadata address, services on loopback or the private
networks (server-side request forgery). So a webhook's host is resolved, and each
of its addresses must be public (``ipaddress``'s ``is_global``: no loopback,
link-local, private, shared, documentation or reserved range) and not a host's
management address, unless it lies in a network the system administrator put on
the allow-list. This is checked when the rule is made and again at every delivery,
which then connects to the address it checked (a DNS answer that changes in
between changes nothing) and never follows a redirect.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy import delete, select

from nubis import blocking
from nubis.db.models import Host
from nubis.db.models.monitoring import WebhookAllowance
from nubis.db.session import Database
from nubis.services.core.errors import BadRequest

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_ALLOWED = 64


class TargetRefused(ValueError):
    pass


@dataclass(frozen=True)
class Target:
    """A webhook URL and the address its delivery connects to."""

    url: str
    hostname: str
    address: str


@dataclass(frozen=True)
class Rules:
    allowed: tuple[Network, ...]
    host_names: tuple[str, ...]  # the hosts' management names and addresses


def rules(db: Database) -> Rules:
    with db.read() as s:
        allowed = tuple(
            ipaddress.ip_network(cidr) for cidr in s.scalars(select(WebhookAllowance.cidr))
        )
        uris = list(s.scalars(select(Host.uri)))
    names = tuple(sorted({h for h in (urlsplit(u).hostname for u in uris) if h}))
    return Rules(allowed, names)


def _resolve(hostname: str, port: int) -> list[Address]:
    blocking.check("DNS lookup")
    try:
        infos = socket.getaddrinfo(hostname, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise TargetRefused(f"the webhook's host {hostname!r} does not resolve") from exc
    return [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]


def check(url: str, found: Rules) -> Target:
    """The address a webhook to ``url`` may be delivered to (TargetRefused else)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TargetRefused("webhook_url must be an http:// or https:// URL")
    if parts.username or parts.password:
        raise TargetRefused("webhook_url must not carry a user name or password")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    managed: set[Address] = set()
    for name in found.host_names:
        try:
            managed.update(_resolve(name, port))
        except TargetRefused:
            continue
    addresses = _resolve(parts.hostname, port)
    for address in addresses:
        if any(address in network for network in found.allowed):
            continue
        if address in managed:
            raise TargetRefused(f"webhooks may not go to a host's management address ({address})")
        if not address.is_global:
            raise TargetRefused(
                f"webhooks may not go to {address}: a loopback, link-local, private or "
                "reserved address (the system administrator can allow a network)"
            )
    return Target(url, parts.hostname, str(addresses[0]))


def check_url(db: Database, url: str) -> None:
    """Refuse (400) a webhook URL a rule may not name. Outside any transaction."""
    try:
        check(url, rules(db))
    except TargetRefused as exc:
        raise BadRequest(str(exc)) from exc


def allowed_networks(db: Database) -> list[str]:
    with db.read() as s:
        return list(s.scalars(select(WebhookAllowance.cidr).order_by(WebhookAllowance.cidr)))


def set_allowed(db: Database, networks: list[str]) -> list[str]:
    """Replace the allow-list (the system administrator's)."""
    if len(networks) > MAX_ALLOWED:
        raise BadRequest(f"at most {MAX_ALLOWED} networks")
    clean = []
    for cidr in networks:
        try:
            clean.append(str(ipaddress.ip_network(cidr, strict=False)))
        except ValueError:
            raise BadRequest(f"{cidr!r} is not a network (CIDR)") from None
    with db.begin() as s:
        s.execute(delete(WebhookAllowance))
        for cidr in sorted(set(clean)):
            s.add(WebhookAllowance(cidr=cidr))
    return allowed_networks(db)
