"""Brute-force throttling with the `limits` library (moving windows).

In-memory counts by default (`BoundedMemoryStorage`, at most MEMORY_STORE_MAX_KEYS keys);
with REDIS_URL the counts live in Redis, so every replica sees the same ones. Password
attempts (logins, and the current-password checks of the account endpoints) count per
account and, for logins, per client address; a success clears the account's count.
Unknown accounts are counted under the identifier as typed (trimmed, lower-cased).
Registrations count per address.
"""

from __future__ import annotations

import bisect
import heapq
import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager

import limits
from limits.aio.storage import MovingWindowSupport, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from limits.storage import storage_from_string

from app.core.config import Settings
from app.core.errors import ServiceUnavailable, TooManyRequests

logger = logging.getLogger("app.throttle")

MEMORY_STORE_MAX_KEYS = 100_000


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
    return BoundedMemoryStorage()


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


class BoundedMemoryStorage(Storage, MovingWindowSupport):
    """Moving windows in process memory, never more than ``max_keys`` keys.

    Instead of limits' MemoryStorage, which trims moving windows only in a background sweep
    that visits every key with a thread hop each (about 30 s for 100,000 keys on the
    development machine), stops with a KeyError when a key is cleared during it (leaving
    that key's lock behind), and has no bound on the number of keys. Here a key's
    timestamps are trimmed whenever the key is used, and a new key that would pass
    ``max_keys`` first removes the expired keys, then those whose windows expire soonest
    (1% more than needed, so that the scan is paid once per many new keys). Everything is
    synchronous between awaits, so no locks are needed.
    """

    STORAGE_SCHEME = None

    def __init__(self, max_keys: int = MEMORY_STORE_MAX_KEYS) -> None:
        super().__init__()
        self.max_keys = max_keys
        self._windows: dict[str, list[float]] = {}  # timestamps, oldest first
        self._expires: dict[str, float] = {}  # when the newest timestamp leaves its window

    def __len__(self) -> int:
        return len(self._windows)

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return ValueError

    async def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        if amount > limit:
            return False
        now = time.time()
        window = self._live_window(key, expiry, now)
        if window is None:
            if len(self._windows) >= self.max_keys:
                self._evict(now)
            window = self._windows[key] = []
        if len(window) + amount > limit:
            return False
        window.extend([now] * amount)
        self._expires[key] = now + expiry
        return True

    async def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        now = time.time()
        window = self._live_window(key, expiry, now)
        if window is None:
            return now, 0
        return window[0], len(window)

    async def clear(self, key: str) -> None:
        self._drop(key)

    async def reset(self) -> int | None:
        count = len(self._windows)
        self._windows.clear()
        self._expires.clear()
        return count

    async def check(self) -> bool:
        return True

    # Fixed windows are not used here (only MovingWindowRateLimiter is).
    async def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        raise NotImplementedError("BoundedMemoryStorage only keeps moving windows")

    async def get(self, key: str) -> int:
        raise NotImplementedError("BoundedMemoryStorage only keeps moving windows")

    async def get_expiry(self, key: str) -> float:
        raise NotImplementedError("BoundedMemoryStorage only keeps moving windows")

    def _live_window(self, key: str, expiry: int, now: float) -> list[float] | None:
        """The key's timestamps still in the window (None, and the key gone, when none is)."""
        window = self._windows.get(key)
        if window is None:
            return None
        del window[: bisect.bisect_left(window, now - expiry)]
        if not window:
            self._drop(key)
            return None
        return window

    def _evict(self, now: float) -> None:
        for key in [key for key, expires in self._expires.items() if expires < now]:
            self._drop(key)
        excess = len(self._windows) - self.max_keys + 1
        if excess > 0:
            excess += self.max_keys // 100
            for key in heapq.nsmallest(excess, self._expires, key=self._expires.__getitem__):
                self._drop(key)

    def _drop(self, key: str) -> None:
        self._windows.pop(key, None)
        self._expires.pop(key, None)
