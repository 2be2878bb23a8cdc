"""Brute-force throttling with the `limits` library (moving windows).

A login attempt is counted, in this order, and an attempt refused by one limit is counted
by none of the later ones:

1. per client address (LOGIN_LIMIT_PER_ADDRESS);
2. per pair (identifier as typed, client address) (LOGIN_LIMIT_PER_ACCOUNT): the identifier
   as login tells accounts apart (`throttle_form`: an email, or a username holding an @,
   NFKC and case-folded; a plain username exactly), for known and unknown accounts alike,
   so a stranger's guesses lock only the stranger's address, and a lockout through the
   username never shows on the email (which would tell that they are one account). A
   success clears the pair;
3. per account across all addresses (LOGIN_LIMIT_PER_ACCOUNT_GLOBAL), the ceiling against
   guesses spread over many addresses: keyed by the account (an unknown identifier by its
   canonical form), so both spellings count there, successes included, and a success does
   not clear it (the owner's logins would refill an attacker's budget). Over it, addresses
   the account logged in from in the last 30 days still get through, so the owner is not
   locked out where they usually are.

The current-password checks of the profile endpoints count per account
(LOGIN_LIMIT_PER_ACCOUNT, cleared by a success) and then in the account's ceiling.
Registrations count per address. Password-reset requests count per address (429) and per
email (over it the answer stays 202 and nothing is sent), unknown emails included; reset
confirmations per address. Verification-link resend requests and verifications count the
same way, with their own EMAIL_VERIFY_LIMIT_* counts. Addresses are counted per IPv4
address and per IPv6 /64 (an IPv4-mapped IPv6 address as its IPv4 address); anything
unparsable as itself.

Counts live in memory (`BoundedMemoryStorage`, at most MEMORY_STORE_MAX_KEYS keys) or,
with REDIS_URL, in Redis, where limits' moving-window script sets every key to expire with
its window. Identifiers only appear in keys as a hash: never in clear, and never with the
"/" that limits puts between the parts of a key.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import ipaddress
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
from app.core.identifiers import throttle_form

logger = logging.getLogger("app.throttle")

MEMORY_STORE_MAX_KEYS = 100_000
KNOWN_ADDRESS_DAYS = 30
# A mark, not a count: present once the account logged in from the address.
_KNOWN_ADDRESS = limits.parse(f"1/{KNOWN_ADDRESS_DAYS} days")
# A refused login's audit event is written once a minute per address and identifier: a
# flood of throttled guesses costs no database write (nor query) past the first.
_THROTTLED_EVENT = limits.parse("1/minute")
IPV6_PREFIX = 64  # a /64 is one subscriber's network: its 2**64 addresses are one client


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


def identifier_key(identifier: str) -> str:
    """The identifier as it appears in keys: as login tells accounts apart (`throttle_form`:
    ``Alice`` and ``alice`` are two accounts, so one's successful login never clears the
    other's count), hashed, so neither an email in clear nor a "/" (limits' separator) gets
    there."""
    return hashlib.sha256(throttle_form(identifier).encode()).hexdigest()[:32]


def account_key(user_id: int) -> str:
    """The account's ceiling (and current-password) count, whichever identifier was typed."""
    return f"user:{user_id}"


def unknown_account_key(identifier: str) -> str:
    return f"unknown:{identifier_key(identifier)}"


def address_key(address: str) -> str:
    """What an address is counted as: an IPv4 address, an IPv6 /64, or the text itself."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv4Address):
        return str(ip)
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network((ip, IPV6_PREFIX), strict=False))


class Throttle:
    def __init__(self, settings: Settings, storage: Storage) -> None:
        self._limiter = MovingWindowRateLimiter(storage)
        self._per_address = limits.parse(settings.login_limit_per_address)
        self._per_account = limits.parse(settings.login_limit_per_account)
        self._ceiling = limits.parse(settings.login_limit_per_account_global)
        self._registrations = limits.parse(settings.register_limit_per_address)
        self._resets_per_address = limits.parse(settings.password_reset_limit_per_address)
        self._resets_per_email = limits.parse(settings.password_reset_limit_per_email)
        self._verifies_per_address = limits.parse(settings.email_verify_limit_per_address)
        self._verifies_per_email = limits.parse(settings.email_verify_limit_per_email)

    async def login_attempt(self, identifier: str, address: str) -> None:
        """Count a login against the address, then the (identifier, address) pair; 429 from
        the first that has no attempts left, and the later limits (the pair, then the
        account's ceiling: `account_attempt`) do not count it. Counted before the password is
        checked, so parallel guesses are counted too; ``login_accepted`` then clears the
        pair. Neither needs the account: a throttled address costs no database query."""
        network = address_key(address)
        await self._hit(self._per_address, "login-address", network)
        # The address comes last: the hash before it has a fixed length, so no "/" in an
        # unparsable address can make two pairs one key.
        await self._hit(self._per_account, "login-pair", identifier_key(identifier), network)

    async def account_attempt(self, account: str, address: str) -> None:
        """A login that got past `login_attempt`, against the account's ceiling. Over the
        ceiling, an address the account logged in from in the last KNOWN_ADDRESS_DAYS still
        gets through (its pair limit still holds): strangers spread over many addresses
        cannot lock the owner out of the places they use."""
        with _storage_guard():
            if await self._limiter.hit(self._ceiling, "account-ceiling", account):
                return
            known = not await self._limiter.test(
                _KNOWN_ADDRESS, "known-address", account, address_key(address)
            )
        if not known:
            raise TooManyRequests(
                await self._retry_after(self._ceiling, ("account-ceiling", account))
            )

    async def login_accepted(self, identifier: str, account: str, address: str) -> None:
        """The right password: the pair starts again (the address and the ceiling do not),
        and the address is known to the account (see `account_attempt`)."""
        network = address_key(address)
        await self._clear(self._per_account, "login-pair", identifier_key(identifier), network)
        with _storage_guard():
            await self._limiter.hit(_KNOWN_ADDRESS, "known-address", account, network)

    async def first_throttled_login(self, identifier: str, address: str) -> bool:
        """Whether this throttled login is the first of its address and identifier in the
        last minute (the one whose event is recorded)."""
        with _storage_guard():
            return await self._limiter.hit(
                _THROTTLED_EVENT,
                "login-throttled",
                identifier_key(identifier),
                address_key(address),
            )

    async def password_attempt(self, account: str) -> None:
        """A current-password check (profile changes): the account's count, then its
        ceiling. Logins are not blocked by the first, only by the ceiling."""
        await self._hit(self._per_account, "current-password", account)
        await self._hit(self._ceiling, "account-ceiling", account)

    async def password_accepted(self, account: str) -> None:
        """The right current password: the account's count starts again (not the ceiling)."""
        await self._clear(self._per_account, "current-password", account)

    async def register_attempt(self, address: str) -> None:
        await self._hit(self._registrations, "register-address", address_key(address))

    async def password_reset_attempt(self, email: str, address: str) -> bool:
        """A reset request: 429 when the address is out of requests; then counted per email,
        known or not, and False when the email is (the caller answers as usual and sends
        nothing: a 429 there would tell that someone asked for this address)."""
        await self._hit(self._resets_per_address, "reset-address", address_key(address))
        with _storage_guard():
            return await self._limiter.hit(
                self._resets_per_email, "reset-email", identifier_key(email)
            )

    async def password_reset_confirm_attempt(self, address: str) -> None:
        """A reset confirmation, per address (its own count, at the requests' limit)."""
        await self._hit(self._resets_per_address, "reset-confirm-address", address_key(address))

    async def email_verify_resend_attempt(self, email: str, address: str) -> bool:
        """A request for a new verification link: as `password_reset_attempt`, with the
        EMAIL_VERIFY_LIMIT_* counts."""
        await self._hit(self._verifies_per_address, "verify-address", address_key(address))
        with _storage_guard():
            return await self._limiter.hit(
                self._verifies_per_email, "verify-email", identifier_key(email)
            )

    async def email_verify_attempt(self, address: str) -> None:
        """A verification (a token sent), per address, at the resend requests' limit."""
        await self._hit(self._verifies_per_address, "verify-token-address", address_key(address))

    async def password_reset_done(
        self, account: str, identifiers: tuple[str, ...], address: str
    ) -> None:
        """A password set through a reset link: the account's failed-login counts start
        again: its ceiling and current-password count, and the pairs of its identifiers
        with the confirming address (pairs from other addresses cannot be found; they
        expire with their window). Unlike a login, the ceiling is cleared: the link proved
        the mailbox, and whoever holds that could reset anyway."""
        await self._clear(self._ceiling, "account-ceiling", account)
        await self._clear(self._per_account, "current-password", account)
        network = address_key(address)
        for identifier in identifiers:
            await self._clear(self._per_account, "login-pair", identifier_key(identifier), network)

    async def _hit(self, limit: limits.RateLimitItem, *key: str) -> None:
        with _storage_guard():
            allowed = await self._limiter.hit(limit, *key)
        if not allowed:
            raise TooManyRequests(await self._retry_after(limit, key))

    async def _clear(self, limit: limits.RateLimitItem, *key: str) -> None:
        with _storage_guard():
            await self._limiter.clear(limit, *key)

    async def _retry_after(self, limit: limits.RateLimitItem, key: tuple[str, ...]) -> int:
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
