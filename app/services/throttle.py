"""Brute-force throttling with the `limits` library (moving windows).

In-memory counts by default; with REDIS_URL the counts live in Redis, so every replica
sees the same ones. Password attempts (logins, and the current-password checks of the
account endpoints) count per account and, for logins, per client address; a success clears
the account's count. Unknown accounts are counted under the identifier as typed (trimmed,
lower-cased). Registrations count per address.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager

import limits
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from limits.storage import storage_from_string

from app.core.config import Settings
from app.core.errors import ServiceUnavailable, TooManyRequests

logger = logging.getLogger("app.throttle")


def create_storage(settings: Settings) -> Storage:
    if settings.redis_url:
        storage = storage_from_string(
            f"async+{settings.redis_url}",
            implementation="redispy",
            wrap_exceptions=True,
            key_prefix=settings.redis_key_prefix,
        )
        assert isinstance(storage, Storage)
        return storage
    return MemoryStorage()


def account_key(user_id: int) -> str:
    """One count per account, whichever identifier (username or email) was typed."""
    return f"user:{user_id}"


def unknown_account_key(identifier: str) -> str:
    return f"unknown:{identifier.strip().lower()}"


class Throttle:
    def __init__(self, settings: Settings, storage: Storage) -> None:
        self._limiter = MovingWindowRateLimiter(storage)
        self._per_account = limits.parse(settings.login_limit_per_account)
        self._per_address = limits.parse(settings.login_limit_per_address)
        self._registrations = limits.parse(settings.register_limit_per_address)

    async def login_attempt(self, account: str, address: str) -> None:
        """Count a login against the account and the address; 429 when either has no
        attempts left. Counted before the password is checked, so parallel guesses are
        counted too; ``password_accepted`` then clears the account's count."""
        await self._hit(self._per_account, ("account", account))
        await self._hit(self._per_address, ("login-address", address))

    async def password_attempt(self, account: str) -> None:
        """A current-password check (profile changes): the account's count only."""
        await self._hit(self._per_account, ("account", account))

    async def password_accepted(self, account: str) -> None:
        """The right password: the account's count starts again (an address's does not)."""
        with _storage_guard():
            await self._limiter.clear(self._per_account, "account", account)

    async def register_attempt(self, address: str) -> None:
        await self._hit(self._registrations, ("register-address", address))

    async def _hit(self, limit: limits.RateLimitItem, key: tuple[str, str]) -> None:
        with _storage_guard():
            allowed = await self._limiter.hit(limit, *key)
        if not allowed:
            raise TooManyRequests(await self._retry_after(limit, key))

    async def _retry_after(self, limit: limits.RateLimitItem, key: tuple[str, str]) -> int:
        with _storage_guard():
            stats = await self._limiter.get_window_stats(limit, *key)
        return max(1, math.ceil(stats.reset_time - time.time()))


@contextmanager
def _storage_guard() -> Iterator[None]:
    """Redis down: 503 with Retry-After (refusing logins beats not counting them)."""
    try:
        yield
    except StorageError as exc:
        logger.error("throttling store unavailable: %r", exc.storage_error)
        raise ServiceUnavailable() from None
