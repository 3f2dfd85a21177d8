"""Key pairs: SSH public keys a project's instances are given at first boot.

A key is imported (the user keeps the private key) or generated here: then the
private key is in the answer to that one request and nowhere else, never stored.
Keys are parsed by ``cryptography``, so a malformed key or an unsafe one (RSA
under 2048 bits, DSA) is refused before anything is kept.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ed25519, rsa
from sqlalchemy import select
from sqlalchemy.orm import Session

from nubis.db.models import KeyPair
from nubis.services.core.errors import BadRequest, Conflict
from nubis.services.core.lookup import get_by_id_or_name, validate_name
from nubis.services.core.principal import Principal

KEY_TYPES = ("ed25519", "rsa")
MIN_RSA_BITS = 2048
GENERATED_RSA_BITS = 3072
MAX_PUBLIC_KEY_CHARS = 16384


@dataclass(frozen=True)
class ParsedKey:
    line: str  # "<type> <base64>[ <comment>]", normalised to one line
    key_type: str
    fingerprint: str


def fingerprint_of(blob: bytes) -> str:
    """The SHA-256 fingerprint as ``ssh-keygen -l`` prints it."""
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def parse_public_key(text: str) -> ParsedKey:
    """A public key in OpenSSH's one-line format, checked; BadRequest otherwise."""
    if not isinstance(text, str) or not text.strip():
        raise BadRequest("public_key must be an OpenSSH public key ('ssh-ed25519 AAAA... name')")
    if len(text) > MAX_PUBLIC_KEY_CHARS:
        raise BadRequest(f"public_key is longer than {MAX_PUBLIC_KEY_CHARS} characters")
    line = text.strip()
    if "\n" in line or "\r" in line:
        raise BadRequest("public_key must be one line: one key in OpenSSH format")
    fields = line.split()
    if len(fields) < 2:
        raise BadRequest("public_key must be '<type> <base64 key> [comment]'")
    try:
        key = serialization.load_ssh_public_key(" ".join(fields[:2]).encode())
        blob = base64.b64decode(fields[1], validate=True)
    except UnsupportedAlgorithm as exc:
        raise BadRequest(
            f"public_key is not a valid OpenSSH public key: unknown key type {fields[0]!r}"
        ) from exc
    except (ValueError, TypeError) as exc:  # cryptography's own words, and bad base64
        raise BadRequest(f"public_key is not a valid OpenSSH public key: {exc}") from exc
    if isinstance(key, dsa.DSAPublicKey):
        raise BadRequest("DSA keys are not accepted (OpenSSH disabled them): use ed25519")
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise BadRequest(f"RSA keys must have at least {MIN_RSA_BITS} bits")
    return ParsedKey(line=" ".join(fields), key_type=fields[0], fingerprint=fingerprint_of(blob))


def generate(key_type: str, comment: str) -> tuple[str, str]:
    """A new pair: (private key in OpenSSH PEM, public key line)."""
    private: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
    if key_type == "ed25519":
        private = ed25519.Ed25519PrivateKey.generate()
    elif key_type == "rsa":
        private = rsa.generate_private_key(public_exponent=65537, key_size=GENERATED_RSA_BITS)
    else:
        raise BadRequest(f"key_type must be one of {', '.join(KEY_TYPES)}")
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()
    public = private.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return pem, f"{public.decode()} {comment}"


def get(session: Session, principal: Principal, ref: str) -> KeyPair:
    return get_by_id_or_name(session, KeyPair, ref, "key pair", **principal.scope())


def list_pairs(session: Session, principal: Principal) -> list[KeyPair]:
    query = select(KeyPair).filter_by(**principal.scope())
    return list(session.scalars(query.order_by(KeyPair.name)).all())


def create(
    session: Session,
    principal: Principal,
    name: str,
    public_key: str | None = None,
    key_type: str = "ed25519",
) -> tuple[KeyPair, str | None]:
    """Import ``public_key``, or generate a pair when none is given. Returns the key
    pair and, for a generated one, its private key (the only time it is seen)."""
    validate_name(name, "key pair")
    private: str | None = None
    if public_key is None:
        private, public_key = generate(key_type, name)
    parsed = parse_public_key(public_key)
    exists = session.scalar(
        select(KeyPair).where(KeyPair.project_id == principal.project_id, KeyPair.name == name)
    )
    if exists is not None:
        raise Conflict(f"a key pair named {name!r} already exists")
    pair = KeyPair(
        name=name,
        project_id=principal.project_id,
        public_key=parsed.line,
        key_type=parsed.key_type,
        fingerprint=parsed.fingerprint,
    )
    session.add(pair)
    session.flush()
    return pair, private


def delete(session: Session, principal: Principal, ref: str) -> None:
    """Instances keep the copy of the key they were given; only the pair goes."""
    session.delete(get(session, principal, ref))
