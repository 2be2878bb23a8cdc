"""Time-based one-time passwords (RFC 6238 over RFC 4226's HOTP): what authenticator apps
compute. SHA-1, 6 digits, 30-second steps, as every app expects by default.

A few lines of standard library rather than a package: the algorithm is small and fixed,
and the tests check it against the RFC's own vectors.
"""

from __future__ import annotations

import base64
import hmac
import secrets
import struct
from urllib.parse import quote, urlencode

SECRET_BYTES = 20  # 160 bits, RFC 4226's recommendation
STEP_SECONDS = 30
DIGITS = 6
WINDOW = 1  # steps accepted either side of now: a clock off by up to 30 s


def new_secret() -> bytes:
    return secrets.token_bytes(SECRET_BYTES)


def base32(secret: bytes) -> str:
    """The secret as apps take it: base32, without padding."""
    return base64.b32encode(secret).decode().rstrip("=")


def step_at(unix_time: float) -> int:
    return int(unix_time // STEP_SECONDS)


def code_at(secret: bytes, step: int, *, digits: int = DIGITS, digest: str = "sha1") -> str:
    """HOTP(secret, step), ``digits`` long (RFC 4226 section 5.3)."""
    mac = hmac.new(secret, struct.pack(">Q", step), digest).digest()
    offset = mac[-1] & 0x0F
    value = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(value % 10**digits).zfill(digits)


def matching_step(secret: bytes, code: str, unix_time: float, *, after: int | None) -> int | None:
    """The step within ±WINDOW of ``unix_time`` whose code is ``code`` and which is later
    than ``after`` (the last step this secret accepted: a code is never taken twice), or
    None. Every candidate is compared, in constant time."""
    now = step_at(unix_time)
    found = None
    for step in range(now - WINDOW, now + WINDOW + 1):
        if hmac.compare_digest(code_at(secret, step), code) and (after is None or step > after):
            found = step if found is None else found
    return found


def otpauth_uri(secret: bytes, issuer: str, account: str) -> str:
    """The ``otpauth://totp/...`` URI a QR code carries (Google Authenticator's Key Uri
    Format): the issuer both as the label's prefix and as a parameter."""
    label = quote(f"{issuer}:{account}", safe="@:")
    query = urlencode(
        {
            "secret": base32(secret),
            "issuer": issuer,
            "algorithm": "SHA1",
            "digits": DIGITS,
            "period": STEP_SECONDS,
        },
        quote_via=quote,
    )
    return f"otpauth://totp/{label}?{query}"
