"""Password hashing and JWTs: the only module that imports passlib and jose."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ctypes
import hashlib
import json
import math
import os
import re
import secrets
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any, Literal, TypeGuard, cast

from jose import jwk, jws, jwt
from jose.exceptions import JOSEError
from passlib.context import CryptContext
from passlib.exc import UnknownHashError

from app.core.config import Settings
from app.core.errors import InvalidToken, TokenExpired
from app.models.user import ID_MAX

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

# The highest work factors a stored hash may ask for (Django's defaults: PBKDF2 1,000,000
# iterations in 5.2, bcrypt cost 12, argon2 m=100 MiB t=2 p=8; ours: argon2 m=19 MiB t=2
# p=1). A hash may come from an import or a row edited by hand: one asking for more would
# hold a hashing thread for minutes or hours per attempt (4 billion PBKDF2 iterations, bcrypt
# cost 31), or its memory (argon2), and a few wrong passwords would stall every login.
MAX_PBKDF2_ITERATIONS = 5_000_000
MAX_BCRYPT_COST = 16
MAX_ARGON2_MEMORY_KIB = 128 * 1024
MAX_ARGON2_TIME_COST = 10
MAX_ARGON2_PARALLELISM = 16
_ARGON2_PHC = (
    r"\$argon2(?:id|i|d)\$(?:v=[0-9]+\$)?"
    r"m=(?P<memory>[0-9]{1,12}),t=(?P<time>[0-9]{1,12}),p=(?P<lanes>[0-9]{1,12})\$"
)
_WORK_FACTOR = {
    "django_pbkdf2_sha256": re.compile(r"pbkdf2_sha256\$(?P<iterations>[0-9]{1,12})\$"),
    "django_pbkdf2_sha1": re.compile(r"pbkdf2_sha1\$(?P<iterations>[0-9]{1,12})\$"),
    "django_bcrypt_sha256": re.compile(r"bcrypt_sha256\$\$2[abxy]?\$(?P<cost>[0-9]{1,3})\$"),
    "django_bcrypt": re.compile(r"bcrypt\$\$2[abxy]?\$(?P<cost>[0-9]{1,3})\$"),
    "argon2": re.compile(_ARGON2_PHC),
    "django_argon2": re.compile("argon2" + _ARGON2_PHC),
}
_LIMITS = {
    "iterations": MAX_PBKDF2_ITERATIONS,
    "cost": MAX_BCRYPT_COST,
    "memory": MAX_ARGON2_MEMORY_KIB,
    "time": MAX_ARGON2_TIME_COST,
    "lanes": MAX_ARGON2_PARALLELISM,
}


def hash_cost_problem(stored_hash: str) -> str | None:
    """Why ``stored_hash``'s work factor is refused (out of bounds or unreadable), or None
    (also for hashes that have none, or that no handler knows: those never verify)."""
    scheme = PASSWORD_CONTEXT.identify(stored_hash, required=False)
    pattern = _WORK_FACTOR.get(scheme or "")
    if pattern is None:
        return None
    match = pattern.match(stored_hash)
    if match is None:
        return f"{scheme} hash with an unreadable work factor"
    for name, value in match.groupdict().items():
        if int(value) > _LIMITS[name]:
            return f"{scheme} hash asks for {name} {int(value)}, above {_LIMITS[name]}"
    return None


# SimpleJWT's defaults (ALGORITHM, TOKEN_TYPE_CLAIM, USER_ID_CLAIM, JTI_CLAIM).
LEGACY_ALGORITHMS = ["HS256"]
LEGACY_REQUIRED_CLAIMS = ("exp", "iat", "token_type", "user_id", "jti")
MAX_TOKEN_LENGTH = 8192
_SUBJECT = re.compile(r"[1-9][0-9]{0,18}")
_SESSION = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True, slots=True)
class PasswordCheck:
    valid: bool
    new_hash: str | None = None  # set when the stored hash should be replaced


# glibc's mallopt(M_MMAP_THRESHOLD): a fixed threshold also turns off glibc's "dynamic"
# threshold, which after the first free of a 19 MiB argon2 block would serve the next ones
# from per-thread heaps and keep them: 19 MiB of resident memory per hashing thread, forever.
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_BYTES = 1024 * 1024


def _return_large_blocks_to_the_os() -> None:
    """Large allocations (argon2's memory) are mmapped and unmapped when freed (glibc only)."""
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS, Windows): nothing to do
        return
    mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)


# Hashing threads run at a lower CPU priority (nice +10, about a tenth of the event loop's
# share on a busy core): a login storm slows logins down, not every other request.
HASH_THREAD_NICENESS = 10


def _lower_thread_priority() -> None:
    """Executor initializer: on Linux setpriority() with a thread id applies to that thread."""
    if not hasattr(os, "setpriority") or not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASH_THREAD_NICENESS)


class PasswordHasher:
    """Runs hashing in a bounded thread pool: argon2 releases the GIL, the event loop stays free."""

    def __init__(self, threads: int) -> None:
        _return_large_blocks_to_the_os()
        self._executor = ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix="pwhash", initializer=_lower_thread_priority
        )

    @cached_property
    def _dummy_hash(self) -> str:
        return cast(str, PASSWORD_CONTEXT.hash(secrets.token_urlsafe(24)))

    async def hash(self, password: str) -> str:
        return cast(str, await self._run(PASSWORD_CONTEXT.hash, password))

    async def verify(self, password: str, stored_hash: str | None) -> PasswordCheck:
        """Verify against a stored hash; ``None`` (unknown user) costs a dummy verification."""
        return cast(PasswordCheck, await self._run(self._verify_sync, password, stored_hash))

    def _verify_sync(self, password: str, stored_hash: str | None) -> PasswordCheck:
        if stored_hash is None or hash_cost_problem(stored_hash) is not None:
            # No user, or a hash asking for more work than any we accept: refused like a
            # wrong password, at the cost of one.
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


TokenType = Literal["access", "refresh"]


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    expires_in: int


@dataclass(frozen=True, slots=True)
class TokenClaims:
    user_id: int
    auth_session_id: uuid.UUID
    jti: str
    issued_at: float


@dataclass(frozen=True, slots=True)
class LegacyTokenClaims:
    user_id: int
    issued_at: float
    expires_at: float
    jti: str


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _thumbprint(public_jwk: dict[str, Any]) -> str:
    """RFC 7638 key id: SHA-256 over the required members in lexicographic order."""
    required = ("e", "kty", "n") if public_jwk["kty"] == "RSA" else ("crv", "kty", "x", "y")
    canonical = json.dumps({name: public_jwk[name] for name in required}, separators=(",", ":"))
    return _b64url(hashlib.sha256(canonical.encode()).digest())


def _public_key(pem: str, algorithm: str) -> tuple[str, Any, dict[str, Any]]:
    """(kid, verification key, public JWK) for a PEM key of ``algorithm``'s family."""
    try:
        key = jwk.construct(pem, algorithm)
        public = key.public_key() if hasattr(key, "public_key") else key
        public_jwk = dict(public.to_dict())
    except (JOSEError, ValueError, TypeError, AttributeError) as exc:  # wrong key family
        raise ValueError(f"not a usable {algorithm} key: {exc}") from None
    if algorithm == "ES256" and public_jwk.get("crv") != "P-256":
        raise ValueError("ES256 needs a P-256 key")
    kid = _thumbprint(public_jwk)
    public_jwk.update(kid=kid, use="sig", alg=algorithm)
    return kid, public, public_jwk


# What an expired token's holder should do, by type (`TokenExpired`).
_EXPIRED: dict[TokenType, str] = {
    "access": TokenExpired.detail,
    "refresh": "The refresh token has expired: log in again",
}

# Header members that point at keys elsewhere: we never issue them and never follow them.
_FORBIDDEN_HEADERS = frozenset({"jku", "x5u", "jwk", "x5c", "crit"})


class TokenCodec:
    """Issues and verifies our JWTs. Keys, algorithm and options are fixed at start-up.

    Exactly one algorithm is accepted. With HMAC the key is SECRET_KEY and tokens carry no
    ``kid``; with RS256/ES256 tokens carry the RFC 7638 ``kid`` of the signing key, and the
    public keys of earlier signing keys still verify (rotation without logging users out).
    """

    def __init__(self, settings: Settings) -> None:
        self._algorithm = settings.jwt_algorithm
        self._algorithms = [settings.jwt_algorithm]
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self._ttl = {"access": settings.access_token_ttl, "refresh": settings.refresh_token_ttl}
        self._verify_keys: dict[str | None, Any] = {}
        self.public_jwks: list[dict[str, Any]] = []
        if settings.uses_hmac:
            self._kid: str | None = None
            # A jose Key object, built once, for signing and verifying: given the string,
            # jose builds the key again on every call (and on verification first tries to
            # parse it as a JWK set).
            self._signing_key: Any = jwk.construct(settings.signing_key, self._algorithm)
            self._verify_keys[None] = self._signing_key
            return
        assert settings.jwt_private_key_file is not None
        private_pem = settings.jwt_private_key_file.read_text()
        self._kid, public, public_jwk = _public_key(private_pem, self._algorithm)
        try:
            self._signing_key = jwk.construct(private_pem, self._algorithm)
            jwt.encode({}, self._signing_key, algorithm=self._algorithm)
        except (JOSEError, ValueError, TypeError) as exc:
            raise ValueError(f"JWT_PRIVATE_KEY_FILE is not a usable private key: {exc}") from None
        self._verify_keys[self._kid] = public
        self.public_jwks.append(public_jwk)
        for path in settings.jwt_previous_public_key_files:
            kid, public, public_jwk = _public_key(path.read_text(), self._algorithm)
            if kid not in self._verify_keys:
                self._verify_keys[kid] = public
                self.public_jwks.append(public_jwk)

    def lifetime(self, token_type: TokenType) -> timedelta:
        return self._ttl[token_type]

    def issue(
        self,
        token_type: TokenType,
        user_id: int,
        auth_session_id: uuid.UUID,
        jti: str | None = None,
        amr: str = "pwd",
    ) -> IssuedToken:
        """``amr``: the session's methods (space-separated); an access token of a session
        that passed a second factor carries them as the RFC 8176 ``amr`` list."""
        now = int(time.time())
        ttl = self._ttl[token_type]
        claims = {
            "iss": self._issuer,
            "aud": self._audience,
            "sub": str(user_id),
            "sid": auth_session_id.hex,
            "iat": now,
            "exp": now + int(ttl.total_seconds()),
            "jti": jti or new_jti(),
            "type": token_type,
        }
        if amr != "pwd" and token_type == "access":  # noqa: S105
            claims["amr"] = amr.split()
        headers = {"kid": self._kid} if self._kid else None
        token = jwt.encode(claims, self._signing_key, algorithm=self._algorithm, headers=headers)
        return IssuedToken(token=token, expires_in=int(ttl.total_seconds()))

    def verify(self, token: str, token_type: TokenType) -> TokenClaims:
        """Signature, algorithm, key id, issuer, audience, type, the other claims, then
        expiry; else InvalidToken, or TokenExpired when ``exp`` alone is wrong (past)."""
        if len(token) > MAX_TOKEN_LENGTH:
            raise InvalidToken()
        try:
            header = jwt.get_unverified_header(token)
            if not isinstance(header, dict) or _FORBIDDEN_HEADERS & header.keys():
                raise InvalidToken()
            kid = header.get("kid")
            if kid not in self._verify_keys:  # unhashable kid values raise TypeError
                raise InvalidToken()
            # jose checks the algorithm (exactly ours) and the signature; the registered
            # claims are checked below. jwt.decode would parse the header twice more and
            # run checks for claims we never issue: half the cost of the service's most
            # frequent request's token check. tests/test_tokens.py holds the two to the
            # same answers.
            payload = jws.verify(token, self._verify_keys[kid], self._algorithms)
            # UTF-8 only, as jose decodes it (json.loads would guess UTF-16 or -32 from bytes).
            claims = json.loads(payload.decode("utf-8"))
        except Exception:
            # JOSEError covers bad signatures and algorithms; malformed headers or payloads
            # have been seen to raise ValueError, TypeError, KeyError, AttributeError and
            # RecursionError (JSON nested thousands deep) inside the library. Whatever a
            # client sends is a 401, never a 500 (tests/test_token_fuzz.py).
            raise InvalidToken() from None
        if not isinstance(claims, dict) or not self._registered_claims_hold(claims):
            raise InvalidToken()
        if claims.get("type") != token_type:
            raise InvalidToken()
        subject, sid, jti = claims.get("sub"), claims.get("sid"), claims.get("jti")
        if not isinstance(subject, str) or not _SUBJECT.fullmatch(subject):
            raise InvalidToken()
        if not isinstance(sid, str) or not _SESSION.fullmatch(sid):
            raise InvalidToken()
        if not isinstance(jti, str) or not jti:
            raise InvalidToken()
        user_id = int(subject)
        if user_id > ID_MAX:
            raise InvalidToken()
        # Last: only a token that checks out in every other respect has merely expired.
        if time.time() >= claims["exp"]:
            raise TokenExpired(_EXPIRED[token_type])
        return TokenClaims(
            user_id=user_id, auth_session_id=uuid.UUID(hex=sid), jti=jti, issued_at=claims["iat"]
        )

    def _registered_claims_hold(self, claims: dict[str, Any]) -> bool:
        """RFC 7519 checks, as jose's with require_{exp,iat,iss,aud}, but for ``exp``'s
        date (`verify` checks it last): ``exp`` and ``iat`` numbers, ``nbf`` (never issued)
        not in the future, ``iss`` ours, ``aud`` ours or a list that holds it. Dates must
        be JSON numbers (jose also takes numeric strings)."""
        now = time.time()
        exp, iat, nbf = claims.get("exp"), claims.get("iat"), claims.get("nbf", now)
        if not (_is_number(exp) and _is_number(iat) and _is_number(nbf)):
            return False
        if nbf > now:
            return False
        if claims.get("iss") != self._issuer:
            return False
        audience = claims.get("aud")
        if isinstance(audience, str):
            return audience == self._audience
        return (
            isinstance(audience, list)
            and all(isinstance(item, str) for item in audience)
            and self._audience in audience
        )


def _is_number(value: object) -> TypeGuard[float]:
    """A finite JSON number: json.loads also reads NaN and Infinity, which never compare
    as expired. (Not math.isfinite on an int: a 400-digit one overflows a float.)"""
    return type(value) is int or (type(value) is float and math.isfinite(value))


class RandomIds:
    """128-bit random ids as 32 hex digits (uuid4().hex's form), from the kernel's CSPRNG
    read 4 KiB at a time: one ``getrandom`` per 256 ids, not one per id. os.urandom
    releases the GIL around its system call, and under load py-spy found the event loop
    inside it (waiting to take the GIL back from the log writer's thread) for about a
    tenth of a refresh, which makes two ids. Each byte is handed out once; a forked child
    starts on bytes of its own."""

    _BATCH = 4096

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self._pool = b""
        self._next = 0

    def new(self) -> str:
        with self._lock:
            if self._next + 16 > len(self._pool):
                self._pool, self._next = os.urandom(self._BATCH), 0
            start = self._next
            self._next = start + 16
            return self._pool[start : start + 16].hex()


_RANDOM_IDS = RandomIds()
os.register_at_fork(after_in_child=_RANDOM_IDS.reset)


def new_jti() -> str:
    """A token id: 128 random bits as 32 hex digits."""
    return _RANDOM_IDS.new()


# Clock skew allowed between the replaced service and this one for a legacy token's iat.
LEGACY_IAT_LEEWAY_SECONDS = 5


class LegacyTokenCodec:
    """Verifies access tokens issued by the replaced Django service (SimpleJWT), so that the
    switch logs nobody out. Verify-only, with its own key and algorithm list; refresh tokens
    (``token_type: "refresh"``) are refused.

    Django keys leak (settings files get committed), so a token signed with one proves
    little: it must also have ``iat`` (not in the future) and a lifetime ``exp - iat`` no
    longer than the old service's (``LEGACY_SIMPLEJWT_ACCESS_TOKEN_LIFETIME``); the caller
    checks the rest (an imported account, issued after its tokens' cut-off, a user route).
    """

    def __init__(
        self, signing_key: str, max_lifetime: timedelta, issued_before: datetime | None = None
    ) -> None:
        self._key = signing_key
        self._max_lifetime = max_lifetime.total_seconds()
        # After the cut-over the replaced service issues nothing: a later iat is forged.
        self._issued_before = math.inf if issued_before is None else issued_before.timestamp()
        # jose knows require_exp, require_iat and require_jti; the rest is checked below.
        self._options = {"require_exp": True, "require_iat": True, "require_jti": True}

    def verify(self, token: str) -> LegacyTokenClaims:
        if len(token) > MAX_TOKEN_LENGTH:
            raise InvalidToken()
        try:
            claims = jwt.decode(
                token, self._key, algorithms=LEGACY_ALGORITHMS, options=self._options
            )
        except Exception:  # as in TokenCodec.verify: whatever a client sends is a 401
            raise InvalidToken() from None
        if not isinstance(claims, dict) or any(c not in claims for c in LEGACY_REQUIRED_CLAIMS):
            raise InvalidToken()
        if claims["token_type"] != "access":  # noqa: S105
            raise InvalidToken()
        issued_at, expires = claims.get("iat"), claims["exp"]
        if not (_is_number(issued_at) and _is_number(expires)):
            raise InvalidToken()
        if issued_at > min(time.time() + LEGACY_IAT_LEEWAY_SECONDS, self._issued_before):
            raise InvalidToken()
        if expires - issued_at > self._max_lifetime:
            raise InvalidToken()
        # SimpleJWT writes integer primary keys as JSON numbers, other keys as strings.
        user_id = claims["user_id"]
        if isinstance(user_id, str) and _SUBJECT.fullmatch(user_id):
            user_id = int(user_id)
        if isinstance(user_id, bool) or not isinstance(user_id, int) or not 0 < user_id <= ID_MAX:
            raise InvalidToken()
        return LegacyTokenClaims(
            user_id=user_id, issued_at=issued_at, expires_at=expires, jti=str(claims["jti"])
        )


def is_native_password_hash(stored_hash: str) -> bool:
    """True for a hash in this service's own format (argon2), as opposed to a Django one:
    it was set here, by a login that upgraded it or a password change."""
    return bool(PASSWORD_CONTEXT.identify(stored_hash, required=False) == "argon2")


UNUSABLE_PASSWORD_PREFIX = "!"  # noqa: S105 (Django's set_unusable_password())


def is_usable_password_hash(stored_hash: str) -> bool:
    """Django's `has_usable_password`: anything but an unusable ``!...`` hash, including
    hashes this service cannot verify (an imported scrypt one): a reset link is how such an
    account gets a password that works here."""
    return not stored_hash.startswith(UNUSABLE_PASSWORD_PREFIX)
