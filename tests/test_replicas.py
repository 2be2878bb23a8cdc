"""Two server processes sharing one database and one Redis, as replicas behind a balancer."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import PASSWORD, REDIS_URL, REQUIRE_REDIS, run_server

# Real servers, processes or fuzzing: `make test-fast` leaves these out.
pytestmark = pytest.mark.slow


@pytest.fixture
def replicas(database_url: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=2).ping()
    except (OSError, redis.RedisError) as exc:
        if REQUIRE_REDIS:
            pytest.fail(f"Redis at {REDIS_URL} is not usable: {exc!r}")
        pytest.skip(f"Redis at {REDIS_URL} is not usable: {exc!r}")
    shared = {
        "REDIS_URL": REDIS_URL,
        "REDIS_KEY_PREFIX": f"replicas-{uuid.uuid4().hex}",
        "LOGIN_LIMIT_PER_ACCOUNT": "4/15 minutes",
    }
    with ExitStack() as stack:
        first = stack.enter_context(run_server(database_url, tmp_path, **shared))
        second = stack.enter_context(run_server(database_url, tmp_path, **shared))
        yield first, second


def test_tokens_logout_and_throttling_are_shared(replicas: tuple[str, str]) -> None:
    first, second = replicas
    name = f"rep{uuid.uuid4().hex[:8]}"
    httpx.post(
        f"{first}/api/v1/auth/register",
        json={"username": name, "email": f"{name}@example.com", "password": PASSWORD},
    ).raise_for_status()
    tokens = httpx.post(
        f"{first}/api/v1/auth/token", json={"username": name, "password": PASSWORD}
    ).json()
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}

    # issued by one replica, accepted by the other
    assert httpx.get(f"{second}/api/v1/users/profile", headers=headers).status_code == 200

    # logged out on the second, refused by the first at once
    logout = httpx.post(
        f"{second}/api/v1/auth/logout", json={"refresh_token": tokens["refresh_token"]}
    )
    assert logout.status_code == 204
    assert httpx.get(f"{first}/api/v1/users/profile", headers=headers).status_code == 401

    # failed logins counted across both: 2 + 2 exhaust a limit of 4
    for server in (first, first, second, second):
        failed = httpx.post(
            f"{server}/api/v1/auth/token", json={"username": name, "password": "wrong-password"}
        )
        assert failed.status_code == 401
    for server in (first, second):
        blocked = httpx.post(
            f"{server}/api/v1/auth/token", json={"username": name, "password": PASSWORD}
        )
        assert blocked.status_code == 429
        assert int(blocked.headers["retry-after"]) > 0
