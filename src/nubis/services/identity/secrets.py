"""Encryption of secrets at rest (host credentials, later API-key secrets)."""

from __future__ import annotations

import base64
import hashlib
import json

from cryptography.fernet import Fernet


class SecretBox:
    def __init__(self, key_material: bytes) -> None:
        key = base64.urlsafe_b64encode(hashlib.sha256(key_material).digest())
        self._fernet = Fernet(key)

    def encrypt(self, data: dict[str, str]) -> str:
        return self._fernet.encrypt(json.dumps(data).encode()).decode()

    def decrypt(self, token: str) -> dict[str, str]:
        return json.loads(self._fernet.decrypt(token.encode()))

    def __repr__(self) -> str:
        return "SecretBox(***)"
