"""Brute-force throttling: per address, per (identifier, address) pair, per account across
addresses (the ceiling), registrations; memory and Redis."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator

import httpx
import limits
import pytest
import redis.asyncio as aioredis
from fastapi import FastAPI
from limits.aio.strategies import MovingWindowRateLimiter
from pydantic import ValidationError

from app.core.client_address import client_address
from app.core.config import Settings
from app.resources import resources_of, set_resources
from app.services import throttle as throttle_module
from tests.conftest import (
    PASSWORD,
    REDIS_URL,
    REQUIRE_REDIS,
    add_user,
    asgi_client,
    bearer,
    login,
    register,
    running_app,
)

TOKEN = "/api/v1/auth/token"
REGISTER = "/api/v1/auth/register"


@pytest.fixture(params=["memory", "redis"])
async def throttled_app(
    request: pytest.FixtureRequest, settings: Settings
) -> AsyncIterator[FastAPI]:
    overrides: dict[str, object] = {
        "login_limit_per_account": "3/15 minutes",
        "login_limit_per_account_global": "8/hour",
        "login_limit_per_address": "6/minute",
        "register_limit_per_address": "4/hour",
    }
    if request.param == "redis":
        try:
            async with aioredis.from_url(REDIS_URL, socket_timeout=2) as connection:
                await connection.ping()
        except (OSError, aioredis.RedisError) as exc:
            if REQUIRE_REDIS:
                pytest.fail(f"Redis at {REDIS_URL} is not usable: {exc!r}")
            pytest.skip(f"Redis at {REDIS_URL} is not usable: {exc!r}")
        overrides.update(redis_url=REDIS_URL, redis_key_prefix=f"test-{uuid.uuid4().hex}")
    async with running_app(settings.model_copy(update=overrides)) as app:
        yield app


async def fail_login(client: httpx.AsyncClient, username: str) -> httpx.Response:
    return await client.post(TOKEN, json={"username": username, "password": "wrong-password"})


async def use_up_pair(client: httpx.AsyncClient, identifier: str = "alice") -> None:
    """Three wrong passwords (LOGIN_LIMIT_PER_ACCOUNT here) for the identifier from the
    client's address; the next attempt of this pair is refused."""
    for _ in range(3):
        assert (await fail_login(client, identifier)).status_code == 401


async def right_login(client: httpx.AsyncClient, username: str = "alice") -> httpx.Response:
    return await client.post(TOKEN, json={"username": username, "password": PASSWORD})


async def test_another_accounts_success_never_clears_a_pair(throttled_app: FastAPI) -> None:
    """Usernames are case-sensitive: the attacker's own account ``alice`` logging in must
    not clear the count of their guesses at ``Alice`` (found by the review of the fix)."""
    async with asgi_client(throttled_app, "10.0.0.11") as client:
        await add_user(throttled_app, username="Alice", email="victim@example.com")
        await add_user(throttled_app, username="alice", email="attacker@example.com")
        await use_up_pair(client, "Alice")
        assert (await right_login(client, "alice")).status_code == 200
        assert (await fail_login(client, "Alice")).status_code == 429


@pytest.mark.parametrize(
    ("username", "variant"),
    [
        ("alice", "\uff41\uff4c\uff49\uff43\uff45 "),  # fullwidth, NFKC folds it to "alice"
        ("alice@example.com", "ALICE@Example.com"),
        ("nobody-here", " nobody-here"),
    ],
)
async def test_pair_limit_same_for_existing_and_unknown(
    throttled_app: FastAPI, username: str, variant: str
) -> None:
    async with asgi_client(throttled_app, "10.0.0.1") as client:
        await add_user(throttled_app)
        await use_up_pair(client, username)
        blocked = await fail_login(client, variant)  # the same spelling, canonically
        assert blocked.status_code == 429
        assert blocked.json()["code"] == "too_many_requests"
        assert 1 <= int(blocked.headers["retry-after"]) <= 15 * 60
    # another address: its own pair, existing and unknown accounts alike
    async with asgi_client(throttled_app, "10.0.0.2") as client:
        assert (await fail_login(client, username)).status_code == 401
    settings = resources_of(throttled_app).settings
    if settings.redis_url:  # the counts really live in Redis
        async with aioredis.from_url(settings.redis_url) as connection:
            keys = await connection.keys(f"{settings.redis_key_prefix}*")
        assert len(keys) >= 3


async def test_owner_logs_in_while_a_strangers_address_is_locked_out(
    throttled_app: FastAPI,
) -> None:
    async with asgi_client(throttled_app, "10.0.2.1") as stranger:
        await add_user(throttled_app)
        await use_up_pair(stranger)
        assert (await right_login(stranger)).status_code == 429  # the pair is locked
    async with asgi_client(throttled_app, "10.0.2.2") as owner:
        assert (await right_login(owner)).status_code == 200


async def test_a_lockout_through_the_username_does_not_show_on_the_email(
    throttled_app: FastAPI,
) -> None:
    async with asgi_client(throttled_app, "10.0.2.3") as stranger:
        await add_user(throttled_app)
        await use_up_pair(stranger)
        assert (await fail_login(stranger, "alice")).status_code == 429
        email = await fail_login(stranger, "alice@example.com")
        unknown = await fail_login(stranger, "nobody@example.com")
    assert email.status_code == unknown.status_code == 401
    assert email.json() == unknown.json()


async def test_attempts_refused_by_the_address_limit_count_nowhere_else(
    throttled_app: FastAPI,
) -> None:
    async with asgi_client(throttled_app, "10.0.2.4") as client:
        await add_user(throttled_app)
        for i in range(6):
            assert (await fail_login(client, f"other{i}")).status_code == 401
        for _ in range(10):
            refused = await fail_login(client, "alice")
            assert refused.status_code == 429
            assert int(refused.headers["retry-after"]) <= 60  # the address limit refused
    # A replica with a wider address limit, sharing the counts, finds the pair unused.
    resources = resources_of(throttled_app)
    wider = resources.settings.model_copy(update={"login_limit_per_address": "100/minute"})
    replica = throttle_module.Throttle(wider, resources.throttle_storage)
    set_resources(throttled_app, dataclasses.replace(resources, throttle=replica))
    async with asgi_client(throttled_app, "10.0.2.4") as client:
        await use_up_pair(client)
        assert (await fail_login(client, "alice")).status_code == 429
    # and the ceiling (8/hour) has counted those 3 only: the owner gets in
    async with asgi_client(throttled_app, "10.0.2.5") as owner:
        assert (await right_login(owner)).status_code == 200


async def test_the_ceiling_stops_guesses_spread_over_addresses(throttled_app: FastAPI) -> None:
    async with asgi_client(throttled_app, "10.0.3.1") as client:
        await add_user(throttled_app)
        await use_up_pair(client)
    async with asgi_client(throttled_app, "10.0.3.2") as owner:
        assert (await right_login(owner)).status_code == 200  # counts, clears no ceiling
    async with asgi_client(throttled_app, "10.0.3.3") as client:
        # the other spelling: another pair, the same ceiling
        await use_up_pair(client, "alice@example.com")
    async with asgi_client(throttled_app, "10.0.3.4") as client:
        assert (await fail_login(client, "alice")).status_code == 401  # 8 of 8/hour
        blocked = await fail_login(client, "alice")
        assert blocked.status_code == 429
        assert int(blocked.headers["retry-after"]) > 15 * 60  # the hour's ceiling refused
    async with asgi_client(throttled_app, "10.0.3.5") as owner:
        assert (await right_login(owner)).status_code == 429
        assert (await right_login(owner, "alice@example.com")).status_code == 429
    # where the owner logged in before, strangers elsewhere do not lock them out
    async with asgi_client(throttled_app, "10.0.3.2") as owner:
        assert (await right_login(owner)).status_code == 200
        assert (await right_login(owner, "alice@example.com")).status_code == 200


async def test_ipv6_clients_are_counted_per_64(throttled_app: FastAPI) -> None:
    async with asgi_client(throttled_app, "2001:db8:0:1::1") as client:
        await add_user(throttled_app)
    for i in range(6):  # the address limit: six hosts of one /64
        async with asgi_client(throttled_app, f"2001:db8:0:1::{i + 2:x}") as client:
            assert (await fail_login(client, f"v6user{i}")).status_code == 401
    async with asgi_client(throttled_app, "2001:db8:0:1:ffff:ffff:ffff:ffff") as client:
        assert (await fail_login(client, "v6user9")).status_code == 429
    async with asgi_client(throttled_app, "2001:db8:0:2::1") as client:
        assert (await fail_login(client, "v6user9")).status_code == 401
    for i in range(3):  # the pair: alice from three hosts of another /64
        async with asgi_client(throttled_app, f"2001:db8:0:3::{i + 1}") as client:
            assert (await fail_login(client, "alice")).status_code == 401
    async with asgi_client(throttled_app, "2001:db8:0:3::99") as client:
        assert (await right_login(client)).status_code == 429
    async with asgi_client(throttled_app, "2001:db8:0:4::1") as client:
        assert (await right_login(client)).status_code == 200
    for i in range(4):  # registrations (4/hour) from four hosts of a /64
        async with asgi_client(throttled_app, f"2001:db8:0:5::{i + 1}") as client:
            await register(client, username=f"six{i}", email=f"six{i}@example.com")
    async with asgi_client(throttled_app, "2001:db8:0:5::99") as client:
        blocked = await client.post(
            REGISTER, json={"username": "six9", "email": "six9@example.com", "password": PASSWORD}
        )
        assert blocked.status_code == 429


async def test_ipv4_mapped_addresses_count_as_ipv4(throttled_app: FastAPI) -> None:
    async with asgi_client(throttled_app, "10.0.4.1") as client:
        for i in range(6):
            assert (await fail_login(client, f"v4user{i}")).status_code == 401
    async with asgi_client(throttled_app, "::ffff:10.0.4.1") as client:
        assert (await fail_login(client, "v4user9")).status_code == 429
    async with asgi_client(throttled_app, "::ffff:10.0.4.2") as client:
        assert (await fail_login(client, "v4user9")).status_code == 401


@pytest.mark.parametrize("throttled_app", ["redis"], indirect=True)
async def test_redis_keys_expire_and_hold_no_identifier(throttled_app: FastAPI) -> None:
    async with asgi_client(throttled_app, "10.0.5.1") as client:
        await register(client)
        token = await login(client)
        for identifier in ("alice@example.com", "nobody/with/a/slash@example.com"):
            assert (await fail_login(client, identifier)).status_code == 401
        wrong = await client.post(
            "/api/v1/users/profile/password",
            json={"current_password": "a-wrong-guess", "new_password": "Another-pass-91"},
            headers=bearer(token),
        )
        assert wrong.status_code == 403
        await register(client, username="bob", email="bob@example.com")
    settings = resources_of(throttled_app).settings
    assert settings.redis_url is not None
    async with aioredis.from_url(settings.redis_url) as connection:
        keys = [key.decode() async for key in connection.scan_iter(f"{settings.redis_key_prefix}*")]
        ttls = [await connection.ttl(key) for key in keys]
    for key in keys:  # identifiers are hashed
        assert "alice" not in key
        assert "example" not in key
        assert "nobody" not in key
    limit = {"known-address": throttle_module.KNOWN_ADDRESS_DAYS * 86400}
    for key, ttl in zip(keys, ttls, strict=True):
        assert 0 < ttl <= limit.get(key.split("/")[1], 3600), (key, ttl)
    # address, 2 pairs (the success cleared alice's), 2 ceilings, current password,
    # registrations, and alice's known address
    assert len(keys) == 8, keys


async def test_the_memory_store_is_bounded() -> None:
    storage = throttle_module.create_storage(Settings(_env_file=None, secret_key="k" * 32))
    assert storage.max_keys == throttle_module.MEMORY_STORE_MAX_KEYS  # type: ignore[attr-defined]

    small = throttle_module.BoundedMemoryStorage(max_keys=4)
    limiter = MovingWindowRateLimiter(small)
    hour, minute = limits.parse("5/hour"), limits.parse("5/minute")
    assert await limiter.hit(hour, "long")
    for i in range(3):
        assert await limiter.hit(minute, f"short{i}")
    assert len(small) == 4
    assert await limiter.hit(minute, "new")  # full: the key that expires soonest goes
    assert len(small) == 4
    assert (await limiter.get_window_stats(minute, "short0")).remaining == 5
    for key in ("short1", "short2", "new"):
        assert (await limiter.get_window_stats(minute, key)).remaining == 4
    assert (await limiter.get_window_stats(hour, "long")).remaining == 4

    # Logins with ever new unknown identifiers from ever new addresses keep it at its bound.
    settings = Settings(_env_file=None, secret_key="k" * 32)
    throttle = throttle_module.Throttle(settings, small)
    for i in range(200):
        identifier = f"unknown-{i}@example.com"
        account = throttle_module.unknown_account_key(identifier)
        await throttle.login_attempt(identifier, f"10.9.{i}.1")
        await throttle.account_attempt(account, f"10.9.{i}.1")
        assert len(small) <= 4


def test_the_ceiling_is_a_validated_setting() -> None:
    assert Settings(_env_file=None, secret_key="k" * 32).login_limit_per_account_global == (
        "50/hour"
    )
    with pytest.raises(ValidationError, match="not a rate limit"):
        Settings(_env_file=None, secret_key="k" * 32, login_limit_per_account_global="lots")


async def test_parallel_guesses_are_counted_before_they_are_checked(
    throttled_app: FastAPI,
) -> None:
    async with asgi_client(throttled_app, "10.0.0.8") as client:
        await add_user(throttled_app)
        answers = await asyncio.gather(*(fail_login(client, "alice") for _ in range(12)))
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [401] * 3 + [429] * 9


async def test_current_password_guesses_share_the_account_limit(
    throttled_app: FastAPI,
) -> None:
    async with asgi_client(throttled_app, "10.0.0.9") as client:
        await add_user(throttled_app)
        token = await login(client)  # 1 of the ceiling's 8
        for _ in range(3):  # 4
            wrong = await client.post(
                "/api/v1/users/profile/password",
                json={"current_password": "a-wrong-guess", "new_password": "Another-pass-91"},
                headers=bearer(token),
            )
            assert wrong.status_code == 403
    for address in ("10.0.0.9", "10.0.0.10"):  # the account's count, from any address
        async with asgi_client(throttled_app, address) as client:
            blocked = await client.patch(
                "/api/v1/users/profile",
                json={"email": "new@example.com", "current_password": PASSWORD},
                headers=bearer(token),
            )
            assert blocked.status_code == 429
            assert 1 <= int(blocked.headers["retry-after"]) <= 15 * 60
    # It does not block logins by itself, but the checks counted in the ceiling.
    async with asgi_client(throttled_app, "10.0.0.11") as client:
        for _ in range(4):  # 5..8
            assert (await right_login(client)).status_code == 200
    async with asgi_client(throttled_app, "10.0.0.12") as client:
        assert (await right_login(client)).status_code == 429


async def test_address_limit_spans_accounts(throttled_app: FastAPI) -> None:
    async with asgi_client(throttled_app, "10.0.0.3") as client:
        await add_user(throttled_app)
        for i in range(6):
            assert (await fail_login(client, f"user{i}")).status_code == 401
        blocked = await client.post(TOKEN, json={"username": "alice", "password": PASSWORD})
        assert blocked.status_code == 429
    async with asgi_client(throttled_app, "10.0.0.4") as client:
        ok = await client.post(TOKEN, json={"username": "alice", "password": PASSWORD})
        assert ok.status_code == 200


async def test_a_success_clears_the_pairs_count(throttled_app: FastAPI) -> None:
    async with asgi_client(throttled_app, "10.0.0.5") as client:
        await add_user(throttled_app)
        for _ in range(2):
            assert (await fail_login(client, "alice")).status_code == 401
        ok = await client.post(TOKEN, json={"username": "alice", "password": PASSWORD})
        assert ok.status_code == 200
        await use_up_pair(client)
        assert (await fail_login(client, "alice")).status_code == 429


async def test_registrations_per_address(throttled_app: FastAPI) -> None:
    async with asgi_client(throttled_app, "10.0.0.6") as client:
        for i in range(4):
            response = await client.post(
                REGISTER,
                json={"username": f"u{i}", "email": f"u{i}@example.com", "password": PASSWORD},
            )
            assert response.status_code == 201
        blocked = await client.post(
            REGISTER, json={"username": "u9", "email": "u9@example.com", "password": PASSWORD}
        )
        assert blocked.status_code == 429
        assert int(blocked.headers["retry-after"]) >= 1


async def test_forwarded_for_is_ignored_from_untrusted_peers(throttled_app: FastAPI) -> None:
    async with asgi_client(throttled_app, "10.0.0.7") as client:
        for i in range(6):
            response = await client.post(
                TOKEN,
                json={"username": f"x{i}", "password": "wrong-password"},
                headers={"X-Forwarded-For": f"192.0.2.{i}"},
            )
            assert response.status_code == 401
        blocked = await fail_login(client, "x9")
        assert blocked.status_code == 429


async def test_forwarded_for_is_used_from_trusted_proxies(settings: Settings) -> None:
    trusted = settings.model_copy(
        update={
            "login_limit_per_address": "2/minute",
            "trusted_proxies": Settings(
                _env_file=None, secret_key="k" * 32, trusted_proxies="10.1.0.0/16"
            ).trusted_proxies,
        }
    )
    async with running_app(trusted) as app, asgi_client(app, "10.1.2.3") as client:
        for i in range(2):
            response = await client.post(
                TOKEN,
                json={"username": f"y{i}", "password": "wrong-password"},
                headers={"X-Forwarded-For": "198.51.100.7"},
            )
            assert response.status_code == 401
        blocked = await client.post(
            TOKEN,
            json={"username": "y5", "password": "wrong-password"},
            headers={"X-Forwarded-For": "198.51.100.7"},
        )
        assert blocked.status_code == 429
        other_client = await client.post(
            TOKEN,
            json={"username": "y6", "password": "wrong-password"},
            headers={"X-Forwarded-For": "198.51.100.8"},
        )
        assert other_client.status_code == 401


def test_client_address_rules() -> None:
    proxies = Settings(
        _env_file=None, secret_key="k" * 32, trusted_proxies="10.0.0.0/8, ::1"
    ).trusted_proxies
    assert client_address("203.0.113.9", ["1.2.3.4"], proxies) == "203.0.113.9"
    assert client_address("10.0.0.1", ["1.2.3.4"], proxies) == "1.2.3.4"
    assert client_address("10.0.0.1", ["6.6.6.6, 1.2.3.4, 10.0.0.2"], proxies) == "1.2.3.4"
    assert client_address("10.0.0.1", ["6.6.6.6", "1.2.3.4"], proxies) == "1.2.3.4"
    assert client_address("10.0.0.1", [], proxies) == "10.0.0.1"
    assert client_address("::1", ["10.0.0.5"], proxies) == "10.0.0.5"
    assert client_address("10.0.0.1", ["garbage"], proxies) == "garbage"


async def test_redis_down_is_503_not_500(settings: Settings) -> None:
    broken = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    async with running_app(broken) as app, asgi_client(app) as client:
        response = await client.post(TOKEN, json={"username": "a", "password": "b"})
    assert response.status_code == 503
    assert response.headers["retry-after"]
    assert response.json()["code"] == "service_unavailable"
