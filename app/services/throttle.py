"""Brute-force throttling with the `limits` library (moving windows).

In-memory counts by default; with REDIS_URL the counts live in Redis, so every replica
sees the same ones. Failed logins count per account (the identifier as typed, lower-cased,
whether or not the account exists) and per client address; registrations count per address.
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


class Throttle:
    def __init__(self, settings: Settings, storage: Storage) -> None:
        self._limiter = MovingWindowRateLimiter(storage)
        self._per_account = limits.parse(settings.login_limit_per_account)
        self._per_address = limits.parse(settings.login_limit_per_address)
        self._registrations = limits.parse(settings.register_limit_per_address)

    async def check_login(self, identifier: str, address: str) -> None:
        """429 when either count is exhausted, before any password is checked."""
        for limit, key in self._login_keys(identifier, address):
            with _storage_guard():
                allowed = await self._limiter.test(limit, *key)
            if not allowed:
                raise TooManyRequests(await self._retry_after(limit, key))

    async def record_login_failure(self, identifier: str, address: str) -> None:
        for limit, key in self._login_keys(identifier, address):
            with _storage_guard():
                await self._limiter.hit(limit, *key)

    async def register_attempt(self, address: str) -> None:
        key = ("register-address", address)
        with _storage_guard():
            allowed = await self._limiter.hit(self._registrations, *key)
        if not allowed:
            raise TooManyRequests(await self._retry_after(self._registrations, key))

    def _login_keys(
        self, identifier: str, address: str
    ) -> list[tuple[limits.RateLimitItem, tuple[str, str]]]:
        return [
            (self._per_account, ("login-account", identifier.strip().lower())),
            (self._per_address, ("login-address", address)),
        ]

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
