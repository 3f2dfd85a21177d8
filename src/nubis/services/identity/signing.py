"""The signed-request format, shared by the server and the CLI (pure: no I/O).

The canonical request is five lines joined by ``\\n``: the method in capitals, the
URL path, the query with its ``name=value`` pairs percent-encoded (RFC 3986) and
sorted, the hex SHA-256 of the body (``UNSIGNED-PAYLOAD`` for an
``application/octet-stream`` upload), and the timestamp (Unix seconds). The
signature is the hex HMAC-SHA256 of it under the key's secret.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import quote

UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
KEY_HEADER = "x-nubis-key"
TIMESTAMP_HEADER = "x-nubis-timestamp"
SIGNATURE_HEADER = "x-nubis-signature"


def canonical_query(pairs: list[tuple[str, str]]) -> str:
    encoded = sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~")) for k, v in pairs)
    return "&".join(f"{k}={v}" for k, v in encoded)


def body_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def canonical_request(
    method: str, path: str, query: list[tuple[str, str]], payload_hash: str, timestamp: str
) -> str:
    return "\n".join([method.upper(), path, canonical_query(query), payload_hash, timestamp])


def sign(secret: str, canonical: str) -> str:
    return hmac.new(secret.encode(), canonical.encode(), hashlib.sha256).hexdigest()


def equal(presented: str, expected: str) -> bool:
    """Compare a secret a client presented with the expected one, in constant time.
    Any text compares (a header may carry any byte: never an error, only False)."""
    return hmac.compare_digest(presented.encode(), expected.encode())
