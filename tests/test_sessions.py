"""Refresh rotation with reuse detection, logout, logout-all, on both databases."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from jose import jwt
from sqlalchemy import delete, event, select

from app.models import AuthSession, User
from app.repositories.driver import DriverConnections
from app.resources import resources_of
from tests.conftest import (
    PASSWORD,
    TEST_SECRET_KEY,
    add_user,
    bearer,
    is_postgres,
    set_columns,
    sign_in,
)

TOKEN = "/api/v1/auth/token"
REFRESH = "/api/v1/auth/token/refresh"
LOGOUT = "/api/v1/auth/logout"
LOGOUT_ALL = "/api/v1/auth/logout-all"
PROFILE = "/api/v1/users/profile"


async def log_in(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.post(TOKEN, json={"username": "alice", "password": PASSWORD})
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


async def profile_status(client: httpx.AsyncClient, access_token: str) -> int:
    return (await client.get(PROFILE, headers=bearer(access_token))).status_code


@pytest.fixture
async def tokens(app: FastAPI) -> dict[str, str]:
    """alice's tokens of one session."""
    await add_user(app)
    return await sign_in(app)


async def test_refresh_rotates_both_tokens(
    client: httpx.AsyncClient, tokens: dict[str, Any]
) -> None:
    response = await client.post(REFRESH, json={"refresh_token": tokens["refresh_token"]})
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    new = response.json()
    assert new["refresh_token"] != tokens["refresh_token"]
    assert new["access_token"] != tokens["access_token"]
    assert await profile_status(client, new["access_token"]) == 200
    # same session: the old access token stays valid until it expires
    assert await profile_status(client, tokens["access_token"]) == 200
    again = await client.post(REFRESH, json={"refresh_token": new["refresh_token"]})
    assert again.status_code == 200


async def test_a_refresh_is_one_statement(
    app: FastAPI,
    client: httpx.AsyncClient,
    tokens: dict[str, str],
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A refresh that succeeds is the rotation's conditional UPDATE, which also reads
    whether the user is active, and nothing else: on PostgreSQL on the driver connections,
    with no ORM session and no BEGIN or COMMIT; on SQLite through the ORM."""
    orm_statements: list[str] = []
    driver_statements: list[str] = []

    def record(*args: Any) -> None:
        orm_statements.append(args[2])

    real_fetchrow = DriverConnections.fetchrow

    async def recorded_fetchrow(self: DriverConnections, query: str, *args: object) -> Any:
        driver_statements.append(query)
        return await real_fetchrow(self, query, *args)

    monkeypatch.setattr(DriverConnections, "fetchrow", recorded_fetchrow)
    engine = resources_of(app).engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        response = await client.post(REFRESH, json={"refresh_token": tokens["refresh_token"]})
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert response.status_code == 200
    on_driver = is_postgres(database_url)
    statements = driver_statements if on_driver else orm_statements
    assert [statement.split()[:2] for statement in statements] == [["UPDATE", "auth_sessions"]]
    assert not (orm_statements if on_driver else driver_statements)


async def test_reusing_a_rotated_token_revokes_the_family(
    client: httpx.AsyncClient, tokens: dict[str, Any]
) -> None:
    first = (await client.post(REFRESH, json={"refresh_token": tokens["refresh_token"]})).json()
    second = (await client.post(REFRESH, json={"refresh_token": first["refresh_token"]})).json()

    replay = await client.post(REFRESH, json={"refresh_token": tokens["refresh_token"]})
    assert replay.status_code == 401
    assert replay.json()["code"] == "refresh_token_reused"
    assert replay.headers["www-authenticate"].startswith('Bearer error="invalid_token"')

    newest = await client.post(REFRESH, json={"refresh_token": second["refresh_token"]})
    assert newest.status_code == 401
    for access in (tokens["access_token"], first["access_token"], second["access_token"]):
        assert await profile_status(client, access) == 401


async def test_other_sessions_survive_a_reuse(
    client: httpx.AsyncClient, app: FastAPI, tokens: dict[str, Any]
) -> None:
    other = await sign_in(app)
    await client.post(REFRESH, json={"refresh_token": tokens["refresh_token"]})
    await client.post(REFRESH, json={"refresh_token": tokens["refresh_token"]})  # reuse
    assert await profile_status(client, other["access_token"]) == 200
    assert (
        await client.post(REFRESH, json={"refresh_token": other["refresh_token"]})
    ).status_code == 200


async def test_concurrent_refreshes_have_exactly_one_winner(
    client: httpx.AsyncClient, app: FastAPI, tokens: dict[str, Any]
) -> None:
    responses = await asyncio.gather(
        *(client.post(REFRESH, json={"refresh_token": tokens["refresh_token"]}) for _ in range(10))
    )
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200] + [401] * 9, [r.text for r in responses]
    # The losers presented a spent token: reuse, so the winner's successor is revoked too.
    (winner,) = [r.json() for r in responses if r.status_code == 200]
    retry = await client.post(REFRESH, json={"refresh_token": winner["refresh_token"]})
    assert retry.status_code == 401
    async with resources_of(app).sessionmaker() as db:
        rows = (await db.scalars(select(AuthSession))).all()
    assert len(rows) == 1
    assert rows[0].revoked_at is not None


async def test_access_and_refresh_tokens_are_not_interchangeable(
    client: httpx.AsyncClient, tokens: dict[str, Any]
) -> None:
    as_refresh = await client.post(REFRESH, json={"refresh_token": tokens["access_token"]})
    assert as_refresh.status_code == 401
    assert as_refresh.json()["code"] == "invalid_token"
    assert await profile_status(client, tokens["refresh_token"]) == 401
    logout = await client.post(LOGOUT, json={"refresh_token": tokens["access_token"]})
    assert logout.status_code == 401


def expired(token: str, **claims: Any) -> str:
    """``token`` re-signed with its ``exp`` in the past (and ``claims`` changed)."""
    now = int(time.time())
    payload = {**jwt.get_unverified_claims(token), "iat": now - 1000, "exp": now - 1, **claims}
    return jwt.encode(payload, TEST_SECRET_KEY)


@pytest.mark.parametrize("path", [REFRESH, LOGOUT])
async def test_an_expired_refresh_token_is_token_expired(
    client: httpx.AsyncClient, tokens: dict[str, Any], path: str
) -> None:
    response = await client.post(path, json={"refresh_token": expired(tokens["refresh_token"])})
    assert response.status_code == 401
    assert response.json() == {
        "detail": "The refresh token has expired: log in again",
        "code": "token_expired",
    }
    assert response.headers["www-authenticate"] == (
        'Bearer error="invalid_token", '
        'error_description="The refresh token has expired: log in again"'
    )
    # Expired and of the wrong type, or expired and forged: invalid, not merely expired.
    as_access = expired(tokens["access_token"])
    wrong_type = await client.post(path, json={"refresh_token": as_access})
    assert (wrong_type.status_code, wrong_type.json()["code"]) == (401, "invalid_token")
    forged = expired(tokens["refresh_token"])[:-4] + "AAAA"
    forged_answer = await client.post(path, json={"refresh_token": forged})
    assert (forged_answer.status_code, forged_answer.json()["code"]) == (401, "invalid_token")


async def test_logout_ends_the_session_at_once(
    client: httpx.AsyncClient, app: FastAPI, tokens: dict[str, Any]
) -> None:
    other = await sign_in(app)
    response = await client.post(LOGOUT, json={"refresh_token": tokens["refresh_token"]})
    assert response.status_code == 204
    assert response.content == b""
    assert await profile_status(client, tokens["access_token"]) == 401
    refresh = await client.post(REFRESH, json={"refresh_token": tokens["refresh_token"]})
    assert refresh.status_code == 401
    assert refresh.json()["code"] == "session_revoked"
    # idempotent, and the other session is untouched
    again = await client.post(LOGOUT, json={"refresh_token": tokens["refresh_token"]})
    assert again.status_code == 204
    assert await profile_status(client, other["access_token"]) == 200


async def test_logout_all_ends_every_session(
    client: httpx.AsyncClient, app: FastAPI, tokens: dict[str, Any]
) -> None:
    other = await sign_in(app)
    response = await client.post(LOGOUT_ALL, headers=bearer(other["access_token"]))
    assert response.status_code == 204
    for pair in (tokens, other):
        assert await profile_status(client, pair["access_token"]) == 401
        refresh = await client.post(REFRESH, json={"refresh_token": pair["refresh_token"]})
        assert refresh.status_code == 401
    fresh = await log_in(client)
    assert await profile_status(client, fresh["access_token"]) == 200


async def test_logout_all_needs_a_valid_access_token(client: httpx.AsyncClient) -> None:
    assert (await client.post(LOGOUT_ALL)).status_code == 401


async def test_inactive_users_refresh_token_is_401(
    client: httpx.AsyncClient, app: FastAPI, tokens: dict[str, Any]
) -> None:
    await set_columns(app, is_active=False)
    response = await client.post(REFRESH, json={"refresh_token": tokens["refresh_token"]})
    assert response.status_code == 401
    assert response.json()["code"] == "inactive_user"
    # Refused, not spent: once the account is active again the same token rotates (no
    # reuse alarm), so nothing of the refused rotation was kept.
    await set_columns(app, is_active=True)
    again = await client.post(REFRESH, json={"refresh_token": tokens["refresh_token"]})
    assert again.status_code == 200


async def test_deleted_users_refresh_token_is_401(
    client: httpx.AsyncClient, app: FastAPI, tokens: dict[str, Any]
) -> None:
    async with resources_of(app).sessionmaker() as db, db.begin():
        await db.execute(delete(User))
    response = await client.post(REFRESH, json={"refresh_token": tokens["refresh_token"]})
    assert response.status_code == 401
    async with resources_of(app).sessionmaker() as db:
        assert (await db.scalars(select(AuthSession))).all() == []  # cascade


def _resign(token: str, **changes: Any) -> str:
    claims = {**jwt.get_unverified_claims(token), **changes}
    return jwt.encode(claims, TEST_SECRET_KEY, algorithm="HS256")


@pytest.mark.parametrize(
    "changes",
    [{"exp": 1}, {"sid": "0" * 32}, {"sub": "999"}, {"jti": "forged"}, {"iss": "other"}],
    ids=["expired", "unknown-session", "other-user", "unknown-jti", "wrong-issuer"],
)
async def test_bad_refresh_tokens_are_401(
    client: httpx.AsyncClient, tokens: dict[str, Any], changes: dict[str, Any]
) -> None:
    response = await client.post(
        REFRESH, json={"refresh_token": _resign(tokens["refresh_token"], **changes)}
    )
    assert response.status_code == 401


@pytest.mark.parametrize(
    "body", [{}, {"refresh_token": ""}, {"refresh_token": 5}, {"refresh_token": "x", "extra": 1}]
)
async def test_refresh_input_is_validated(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    response = await client.post(REFRESH, json=body)
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"


async def test_password_change_ends_every_session(
    client: httpx.AsyncClient, app: FastAPI, tokens: dict[str, Any]
) -> None:
    other = await sign_in(app)  # issued in the same second as the change below
    new_password = "another-Strong-passphrase-29"
    changed = await client.post(
        "/api/v1/users/profile/password",
        json={"current_password": PASSWORD, "new_password": new_password},
        headers=bearer(other["access_token"]),
    )
    assert changed.status_code == 204
    for pair in (tokens, other):
        assert await profile_status(client, pair["access_token"]) == 401
        refresh = await client.post(REFRESH, json={"refresh_token": pair["refresh_token"]})
        assert refresh.status_code == 401
    fresh = await client.post(TOKEN, json={"username": "alice", "password": new_password})
    assert fresh.status_code == 200
    assert await profile_status(client, fresh.json()["access_token"]) == 200


async def test_account_deletion_ends_every_session(
    client: httpx.AsyncClient, tokens: dict[str, Any]
) -> None:
    deleted = await client.request(
        "DELETE",
        PROFILE,
        json={"current_password": PASSWORD},
        headers=bearer(tokens["access_token"]),
    )
    assert deleted.status_code == 204
    assert await profile_status(client, tokens["access_token"]) == 404  # the seed's contract
    refresh = await client.post(REFRESH, json={"refresh_token": tokens["refresh_token"]})
    assert refresh.status_code == 401
