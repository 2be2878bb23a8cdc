"""Password hashing and JWTs: the only module that imports passlib and jose."""

from __future__ import annotations

import asyncio
import re
import secrets
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, cast

from jose import jwt
from jose.exceptions import JOSEError
from passlib.context import CryptContext
from passlib.exc import UnknownHashError

from app.core.config import Settings
from app.core.errors import InvalidToken

# New hashes: argon2id with OWASP's minimum (m=19 MiB, t=2, p=1). Django's formats verify
# and, being deprecated here, are re-hashed to argon2id on the next successful login.
# `django_disabled` identifies Django's unusable passwords ("!..."), which never verify.
PASSWORD_CONTEXT = CryptContext(
    schemes=[
        "argon2",
        "django_argon2",
        "django_pbkdf2_sha256",
        "django_pbkdf2_sha1",
        "django_bcrypt_sha256",
        "django_bcrypt",
        "django_disabled",
    ],
    default="argon2",
    deprecated=["auto"],
    argon2__type="ID",
    argon2__memory_cost=19 * 1024,
    argon2__time_cost=2,
    argon2__parallelism=1,
)

TOKEN_TYPE_ACCESS = "access"  # noqa: S105
# SimpleJWT's defaults (ALGORITHM, TOKEN_TYPE_CLAIM, USER_ID_CLAIM, JTI_CLAIM).
LEGACY_ALGORITHMS = ["HS256"]
LEGACY_REQUIRED_CLAIMS = ("exp", "token_type", "user_id", "jti")
MAX_TOKEN_LENGTH = 8192
_SUBJECT = re.compile(r"[1-9][0-9]{0,18}")
_MAX_ID = 2**63 - 1


@dataclass(frozen=True, slots=True)
class PasswordCheck:
    valid: bool
    new_hash: str | None = None  # set when the stored hash should be replaced


class PasswordHasher:
    """Runs hashing in a bounded thread pool: argon2 releases the GIL, the event loop stays free."""

    def __init__(self, threads: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="pwhash")

    @cached_property
    def _dummy_hash(self) -> str:
        return cast(str, PASSWORD_CONTEXT.hash(secrets.token_urlsafe(24)))

    async def hash(self, password: str) -> str:
        return cast(str, await self._run(PASSWORD_CONTEXT.hash, password))

    async def verify(self, password: str, stored_hash: str | None) -> PasswordCheck:
        """Verify against a stored hash; ``None`` (unknown user) costs a dummy verification."""
        return cast(PasswordCheck, await self._run(self._verify_sync, password, stored_hash))

    def _verify_sync(self, password: str, stored_hash: str | None) -> PasswordCheck:
        if stored_hash is None:
            PASSWORD_CONTEXT.verify(password, self._dummy_hash)
            return PasswordCheck(valid=False)
        try:
            valid, new_hash = PASSWORD_CONTEXT.verify_and_update(password, stored_hash)
        except (UnknownHashError, ValueError, TypeError):
            # Unknown or malformed hash: refuse like a wrong password, at the same cost.
            PASSWORD_CONTEXT.verify(password, self._dummy_hash)
            return PasswordCheck(valid=False)
        return PasswordCheck(valid=bool(valid), new_hash=new_hash if valid else None)

    async def _run(self, func: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, func, *args)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    expires_in: int


class TokenCodec:
    """Encodes and verifies access tokens with one fixed algorithm and key, set up once."""

    def __init__(self, settings: Settings) -> None:
        self._key = settings.signing_key
        self._algorithm = settings.jwt_algorithm
        self._algorithms = [settings.jwt_algorithm]
        self._ttl = settings.access_token_ttl
        self._options = {f"require_{claim}": True for claim in ("sub", "exp", "iat", "jti")}

    def issue_access_token(self, user_id: int) -> IssuedToken:
        now = datetime.now(UTC)
        claims = {
            "sub": str(user_id),
            "iat": int(now.timestamp()),
            "exp": int((now + self._ttl).timestamp()),
            "jti": uuid.uuid4().hex,
            "type": TOKEN_TYPE_ACCESS,
        }
        token = jwt.encode(claims, self._key, algorithm=self._algorithm)
        return IssuedToken(token=token, expires_in=int(self._ttl.total_seconds()))

    def user_id_from_access_token(self, token: str) -> int:
        """Verify signature, algorithm, expiry and required claims; return the user id."""
        if len(token) > MAX_TOKEN_LENGTH:
            raise InvalidToken()
        try:
            claims = jwt.decode(
                token, self._key, algorithms=self._algorithms, options=self._options
            )
        except (JOSEError, ValueError, TypeError, KeyError, AttributeError):
            # JOSEError covers bad signatures, expiry and claims; the others are what
            # malformed headers or payloads have been seen to raise inside the library.
            raise InvalidToken() from None
        if not isinstance(claims, dict) or claims.get("type") != TOKEN_TYPE_ACCESS:
            raise InvalidToken()
        subject = claims.get("sub")
        if not isinstance(subject, str) or not _SUBJECT.fullmatch(subject):
            raise InvalidToken()
        user_id = int(subject)
        if user_id > _MAX_ID:
            raise InvalidToken()
        return user_id


class LegacyTokenCodec:
    """Verifies access tokens issued by the replaced Django service (SimpleJWT), so that the
    switch logs nobody out. Verify-only, with its own key and algorithm list; refresh tokens
    (``token_type: "refresh"``) are refused."""

    def __init__(self, signing_key: str) -> None:
        self._key = signing_key
        # jose knows require_exp and require_jti; token_type and user_id are checked below.
        self._options = {"require_exp": True, "require_jti": True}

    def user_id_from_access_token(self, token: str) -> int:
        if len(token) > MAX_TOKEN_LENGTH:
            raise InvalidToken()
        try:
            claims = jwt.decode(
                token, self._key, algorithms=LEGACY_ALGORITHMS, options=self._options
            )
        except (JOSEError, ValueError, TypeError, KeyError, AttributeError):
            raise InvalidToken() from None
        if not isinstance(claims, dict) or any(c not in claims for c in LEGACY_REQUIRED_CLAIMS):
            raise InvalidToken()
        if claims["token_type"] != TOKEN_TYPE_ACCESS:
            raise InvalidToken()
        # SimpleJWT writes integer primary keys as JSON numbers, other keys as strings.
        user_id = claims["user_id"]
        if isinstance(user_id, str) and _SUBJECT.fullmatch(user_id):
            user_id = int(user_id)
        if isinstance(user_id, bool) or not isinstance(user_id, int) or not 0 < user_id <= _MAX_ID:
            raise InvalidToken()
        return user_id


def is_native_password_hash(stored_hash: str) -> bool:
    """True for a hash in this service's own format (argon2), as opposed to a Django one:
    it was set here, by a login that upgraded it or a password change."""
    return bool(PASSWORD_CONTEXT.identify(stored_hash, required=False) == "argon2")
