"""Brute-force throttling: per account, per address, registrations; memory and Redis."""

from __future__ import annotations

import asyncio
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
from app.services import throttle as throttle_module
from tests.conftest import (
    PASSWORD,
    REDIS_URL,
    REQUIRE_REDIS,
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


@pytest.mark.parametrize(
    ("username", "variant"), [("alice", "ALICE@Example.com"), ("nobody-here", "NOBODY-HERE")]
)
async def test_account_limit_same_for_existing_and_unknown(
    throttled_app: FastAPI, username: str, variant: str
) -> None:
    async with asgi_client(throttled_app, "10.0.0.1") as client:
        await register(client)
        for _ in range(3):
            assert (await fail_login(client, username)).status_code == 401
        blocked = await fail_login(client, variant)  # another spelling of the same account
        assert blocked.status_code == 429
        assert blocked.json()["code"] == "too_many_requests"
        assert 1 <= int(blocked.headers["retry-after"]) <= 15 * 60
    # another address, right password: still refused while the account is throttled
    async with asgi_client(throttled_app, "10.0.0.2") as client:
        response = await client.post(TOKEN, json={"username": username, "password": PASSWORD})
        assert response.status_code == 429
    settings = throttled_app.state.settings
    if settings.redis_url:  # the counts really live in Redis
        async with aioredis.from_url(settings.redis_url) as connection:
            keys = await connection.keys(f"{settings.redis_key_prefix}*")
        assert len(keys) >= 2


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
        await register(client)
        answers = await asyncio.gather(*(fail_login(client, "alice") for _ in range(12)))
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [401] * 3 + [429] * 9


async def test_current_password_guesses_share_the_account_limit(
    throttled_app: FastAPI,
) -> None:
    async with asgi_client(throttled_app, "10.0.0.9") as client:
        await register(client)
        token = await login(client)
        for _ in range(3):
            wrong = await client.post(
                "/api/v1/users/profile/password",
                json={"current_password": "a-wrong-guess", "new_password": "Another-pass-91"},
                headers=bearer(token),
            )
            assert wrong.status_code == 403
        blocked = await client.patch(
            "/api/v1/users/profile",
            json={"email": "new@example.com", "current_password": PASSWORD},
            headers=bearer(token),
        )
        assert blocked.status_code == 429
        assert int(blocked.headers["retry-after"]) >= 1
        refused = await client.post(TOKEN, json={"username": "alice", "password": PASSWORD})
        assert refused.status_code == 429


async def test_address_limit_spans_accounts(throttled_app: FastAPI) -> None:
    async with asgi_client(throttled_app, "10.0.0.3") as client:
        await register(client)
        for i in range(6):
            assert (await fail_login(client, f"user{i}")).status_code == 401
        blocked = await client.post(TOKEN, json={"username": "alice", "password": PASSWORD})
        assert blocked.status_code == 429
    async with asgi_client(throttled_app, "10.0.0.4") as client:
        ok = await client.post(TOKEN, json={"username": "alice", "password": PASSWORD})
        assert ok.status_code == 200


async def test_a_success_clears_the_accounts_count(throttled_app: FastAPI) -> None:
    async with asgi_client(throttled_app, "10.0.0.5") as client:
        await register(client)
        for _ in range(2):
            assert (await fail_login(client, "alice")).status_code == 401
        ok = await client.post(TOKEN, json={"username": "alice", "password": PASSWORD})
        assert ok.status_code == 200
        for _ in range(3):
            assert (await fail_login(client, "alice")).status_code == 401
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
