"""Secrets at rest (TOTP secrets): AES-256-GCM under DATA_ENCRYPTION_KEY.

A stored value is ``v1.<key id>.<nonce + ciphertext, base64url>``; the key id (the first 8
hex digits of the key's SHA-256) names the key that sealed it, so after a rotation the
previous keys (DATA_ENCRYPTION_PREVIOUS_KEYS) still open old values until `python -m app
rotate-data-key` has re-sealed them under the current one. ``context`` (e.g. the user id)
is bound as associated data: a value copied to another row does not open.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable, Sequence

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12
VERSION = "v1"


class UndecryptableValue(Exception):
    """No configured key opens the value (wrong or missing key, or tampering)."""


def new_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(KEY_BYTES)).decode()


def parse_key(text: str) -> bytes:
    """A key as DATA_ENCRYPTION_KEY holds it: 32 bytes, base64 (url-safe or not)."""
    try:
        key = base64.urlsafe_b64decode(text.strip().replace("+", "-").replace("/", "_"))
    except ValueError:
        raise ValueError("not base64") from None
    if len(key) != KEY_BYTES:
        raise ValueError(f"must decode to {KEY_BYTES} bytes, not {len(key)}")
    return key


def key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:8]


class DataCipher:
    def __init__(self, current: bytes, previous: Sequence[bytes] = ()) -> None:
        self._current_id = key_id(current)
        self._keys = {key_id(key): AESGCM(key) for key in (*previous, current)}

    @property
    def current_key_id(self) -> str:
        return self._current_id

    def seal(self, plaintext: bytes, context: str) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._keys[self._current_id].encrypt(nonce, plaintext, context.encode())
        payload = base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")
        return f"{VERSION}.{self._current_id}.{payload}"

    def open(self, value: str, context: str) -> bytes:
        try:
            version, kid, payload = value.split(".", 2)
            aead = self._keys[kid] if version == VERSION else None
            if aead is None:
                raise KeyError(version)
            raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
            return aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], context.encode())
        except Exception:
            raise UndecryptableValue() from None

    def is_current(self, value: str) -> bool:
        return value.startswith(f"{VERSION}.{self._current_id}.")


class DataKeys:
    """The cipher of the configured keys, built on first use: the development key file is
    created only once something is sealed. ``load`` returns None when no key is set (in
    production, where none is generated)."""

    def __init__(self, load: Callable[[], DataCipher | None]) -> None:
        self._load = load
        self._cipher: DataCipher | None = None

    def cipher(self) -> DataCipher | None:
        if self._cipher is None:
            self._cipher = self._load()
        return self._cipher
