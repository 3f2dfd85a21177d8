"""The envelopes OpenStack request bodies come in: ``{"server": {...}}`` around a
resource, ``{"os-stop": null}`` naming one action."""

from __future__ import annotations

from typing import Any

from nubis.services.core.errors import BadRequest


def unwrap(body: dict[str, Any], key: str) -> Any:
    """The content of ``{key: ...}``, the body's only key."""
    if set(body) != {key}:
        raise BadRequest(f"the body is {{{key!r}: {{...}}}}")
    return body[key]


def unwrap_object(body: dict[str, Any], key: str) -> dict[str, Any]:
    """As ``unwrap``, for content that must be an object."""
    inner = unwrap(body, key)
    if not isinstance(inner, dict):
        raise BadRequest(f"the body is {{{key!r}: {{...}}}}")
    return inner


def one_action(body: dict[str, Any]) -> tuple[str, Any]:
    """(action name, its arguments) of an action request."""
    if len(body) != 1:
        raise BadRequest("the body names exactly one action")
    ((name, args),) = body.items()
    return name, args
