from __future__ import annotations

import functools
from datetime import datetime

import httpx
import pytest
from fastapi import FastAPI
from passlib.hash import argon2 as argon2_hash
from passlib.hash import django_argon2, django_bcrypt_sha256, django_pbkdf2_sha256
from sqlalchemy import select

from app.core.security import (
    MAX_ARGON2_MEMORY_KIB,
    MAX_ARGON2_PARALLELISM,
    MAX_ARGON2_TIME_COST,
    MAX_PBKDF2_ITERATIONS,
    hash_cost_problem,
)
from app.models import User
from app.resources import resources_of
from tests.conftest import PASSWORD, add_user, bearer, set_columns

TOKEN = "/api/v1/auth/token"


async def stored_hash(app: FastAPI, username: str = "alice") -> str:
    async with resources_of(app).sessionmaker() as db:
        value = await db.scalar(select(User.password).where(User.username == username))
    assert isinstance(value, str)
    return value


async def test_json_login(client: httpx.AsyncClient, app: FastAPI) -> None:
    await add_user(app)
    response = await client.post(TOKEN, json={"username": "alice", "password": PASSWORD})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {
        "access_token",
        "refresh_token",
        "token_type",
        "expires_in",
        "refresh_expires_in",
    }
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 900
    assert body["refresh_expires_in"] == 14 * 24 * 3600
    assert response.headers["cache-control"] == "no-store"


async def test_form_login_as_the_docs_authorize_dialog_sends_it(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    await add_user(app)
    response = await client.post(
        TOKEN,
        data={"grant_type": "password", "username": "alice", "password": PASSWORD, "scope": ""},
    )
    assert response.status_code == 200
    token = response.json()["access_token"]
    profile = await client.get("/api/v1/users/profile", headers=bearer(token))
    assert profile.status_code == 200


@pytest.mark.parametrize("identifier", ["alice@example.com", "ALICE@Example.com"])
async def test_login_with_email(client: httpx.AsyncClient, app: FastAPI, identifier: str) -> None:
    await add_user(app)
    response = await client.post(TOKEN, json={"username": identifier, "password": PASSWORD})
    assert response.status_code == 200


async def test_login_sets_last_login(client: httpx.AsyncClient, app: FastAPI) -> None:
    await add_user(app)
    response = await client.post(TOKEN, json={"username": "alice", "password": PASSWORD})
    profile = await client.get(
        "/api/v1/users/profile", headers=bearer(response.json()["access_token"])
    )
    last_login = datetime.fromisoformat(profile.json()["last_login"])
    assert last_login.tzinfo is not None
    assert last_login >= datetime.fromisoformat(profile.json()["date_joined"])


async def test_failures_look_the_same(client: httpx.AsyncClient, app: FastAPI) -> None:
    await add_user(app)
    await add_user(app, username="inactive", email="inactive@example.com")
    await set_columns(app, "inactive", is_active=False)
    answers = [
        await client.post(TOKEN, json={"username": "alice", "password": "wrong-password"}),
        await client.post(TOKEN, json={"username": "nobody", "password": PASSWORD}),
        await client.post(TOKEN, json={"username": "inactive", "password": PASSWORD}),
    ]
    for answer in answers:
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"] == "Bearer"
        assert answer.json() == {
            "detail": "Incorrect username or password",
            "code": "invalid_credentials",
        }


@pytest.mark.parametrize(
    "legacy_hash",
    [
        django_pbkdf2_sha256.using(rounds=1000).hash(PASSWORD),
        django_pbkdf2_sha256.using(rounds=870000).hash(PASSWORD),
        django_argon2.hash(PASSWORD),
        django_bcrypt_sha256.hash(PASSWORD),
    ],
    ids=["pbkdf2-1000", "pbkdf2-870000", "argon2", "bcrypt_sha256"],
)
async def test_django_hashes_log_in_and_are_upgraded(
    client: httpx.AsyncClient, app: FastAPI, legacy_hash: str
) -> None:
    await add_user(app)
    await set_columns(app, password=legacy_hash)
    response = await client.post(TOKEN, json={"username": "alice", "password": PASSWORD})
    assert response.status_code == 200
    upgraded = await stored_hash(app)
    assert upgraded.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    wrong = await client.post(TOKEN, json={"username": "alice", "password": "not-it-at-all"})
    assert wrong.status_code == 401
    again = await client.post(TOKEN, json={"username": "alice", "password": PASSWORD})
    assert again.status_code == 200


async def test_wrong_password_does_not_upgrade_a_django_hash(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    await add_user(app)
    legacy = django_pbkdf2_sha256.using(rounds=1000).hash(PASSWORD)
    await set_columns(app, password=legacy)
    response = await client.post(TOKEN, json={"username": "alice", "password": "bad-password"})
    assert response.status_code == 401
    assert await stored_hash(app) == legacy


@pytest.mark.parametrize(
    "unusable",
    ["!", "!q3bz1VQGlCWnOyBYgRVmYpzNyBnTjUnUUFSg4zNh", "md5$unknown$format", "garbage", ""],
)
async def test_unusable_or_unknown_hashes_get_the_generic_401(
    client: httpx.AsyncClient, app: FastAPI, unusable: str
) -> None:
    await add_user(app)
    await set_columns(app, password=unusable)
    response = await client.post(TOKEN, json={"username": "alice", "password": PASSWORD})
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_credentials"


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ({"username": "alice"}, "json"),
        ({"username": "alice", "password": ""}, "json"),
        ({"username": "alice", "password": PASSWORD, "is_staff": True}, "json"),
        ({"username": "a" * 300, "password": PASSWORD}, "json"),
        ({"username": "ali\x00ce", "password": PASSWORD}, "json"),
        ({"username": "\x00", "password": PASSWORD}, "form"),
        ({"username": "alice", "password": "x" * 5000}, "json"),
        ({"password": PASSWORD}, "form"),
        ({"username": "alice", "password": PASSWORD, "grant_type": "client_credentials"}, "form"),
    ],
)
async def test_invalid_login_input_is_422(
    client: httpx.AsyncClient, body: dict[str, object], content_type: str
) -> None:
    if content_type == "json":
        response = await client.post(TOKEN, json=body)
    else:
        response = await client.post(TOKEN, data=body)
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"
    assert PASSWORD not in response.text


async def test_login_malformed_json_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post(
        TOKEN, content=b'{"username": ', headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", None])
async def test_login_other_content_types_are_415(
    client: httpx.AsyncClient, content_type: str | None
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = await client.post(TOKEN, content=b"username=alice", headers=headers)
    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"


@functools.cache
def costly_hash(kind: str) -> str:
    """PASSWORD hashed with a work factor just past what verification accepts (each
    cheap to compute but for PBKDF2, which takes seconds: computed once)."""
    if kind == "pbkdf2":
        return str(django_pbkdf2_sha256.using(rounds=MAX_PBKDF2_ITERATIONS + 1).hash(PASSWORD))
    if kind == "argon2-time":
        return str(
            argon2_hash.using(time_cost=MAX_ARGON2_TIME_COST + 1, memory_cost=1024).hash(PASSWORD)
        )
    if kind == "django-argon2-memory":
        return str(
            django_argon2.using(memory_cost=MAX_ARGON2_MEMORY_KIB + 1, rounds=1).hash(PASSWORD)
        )
    if kind == "django-argon2-lanes":
        return str(
            django_argon2.using(
                parallelism=MAX_ARGON2_PARALLELISM + 1, memory_cost=8 * 1024, rounds=1
            ).hash(PASSWORD)
        )
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind", ["pbkdf2", "argon2-time", "django-argon2-memory", "django-argon2-lanes"]
)
async def test_a_hash_asking_for_too_much_work_never_verifies(
    client: httpx.AsyncClient, app: FastAPI, kind: str
) -> None:
    """Security review, finding 5: a row edited by hand (or imported before the check)
    with a huge work factor is refused like a wrong password, even with the right one."""
    await add_user(app)
    await set_columns(app, password=costly_hash(kind))
    response = await client.post(TOKEN, json={"username": "alice", "password": PASSWORD})
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_credentials"


@pytest.mark.parametrize(
    ("stored", "problem"),
    [
        ("pbkdf2_sha256$4000000000$salt$aGFzaA==", "iterations 4000000000"),
        ("pbkdf2_sha1$5000001$salt$aGFzaA==", "iterations 5000001"),
        ("bcrypt_sha256$$2b$31$" + "a" * 53, "cost 31"),
        ("bcrypt$$2b$17$" + "a" * 53, "cost 17"),
        ("argon2$argon2id$v=19$m=131073,t=2,p=8$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo", "memory 131073"),
        ("$argon2id$v=19$m=19456,t=11,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo", "time 11"),
        ("pbkdf2_sha256$99999999999999$salt$aGFzaA==", "unreadable work factor"),
        ("pbkdf2_sha256$1000000$salt$aGFzaA==", None),  # Django 5.2's default
        ("bcrypt_sha256$$2b$12$" + "a" * 53, None),
        ("argon2$argon2id$v=19$m=102400,t=2,p=8$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo", None),
        ("!unusable", None),
    ],
)
def test_work_factor_bounds(stored: str, problem: str | None) -> None:
    found = hash_cost_problem(stored)
    assert (found is None) == (problem is None), found
    assert problem is None or (found is not None and problem in found)
