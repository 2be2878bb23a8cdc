from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import delete, func, select

from app.models import User
from app.resources import resources_of
from tests.conftest import PASSWORD, register, user_payload

REGISTER = "/api/v1/auth/register"
PUBLIC_FIELDS = {
    "id",
    "username",
    "email",
    "first_name",
    "last_name",
    "number_phone",
    "avatar",
    "date_joined",
    "last_login",
    "is_active",
    "is_staff",
    "is_superuser",
}


async def count_users(app: FastAPI) -> int:
    async with resources_of(app).sessionmaker() as db:
        return int(await db.scalar(select(func.count()).select_from(User)) or 0)


async def test_register_returns_the_profile(client: httpx.AsyncClient) -> None:
    body = await register(client, email="  Alice@Example.COM ")
    assert set(body) == PUBLIC_FIELDS
    assert body["username"] == "alice"
    assert body["email"] == "alice@example.com"
    assert body["first_name"] == "Alice"
    assert body["number_phone"] == "5551234567"
    assert body["avatar"] is None
    assert body["last_login"] is None
    assert body["is_active"] is True
    assert body["is_staff"] is False
    assert body["is_superuser"] is False
    assert body["date_joined"].endswith(("Z", "+00:00"))


async def test_optional_fields_default_to_empty(client: httpx.AsyncClient) -> None:
    response = await client.post(
        REGISTER, json={"username": "bob", "email": "bob@example.com", "password": PASSWORD}
    )
    assert response.status_code == 201
    assert response.json()["first_name"] == ""
    assert response.json()["number_phone"] == ""


async def test_password_is_stored_hashed_with_argon2id(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    await register(client)
    async with resources_of(app).sessionmaker() as db:
        stored = await db.scalar(select(User.password))
    assert stored is not None
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert PASSWORD not in stored


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("username", "alice", "username_taken"),
        ("email", "ALICE@example.com", "email_taken"),
    ],
)
async def test_duplicate_is_409(
    client: httpx.AsyncClient, app: FastAPI, field: str, value: str, code: str
) -> None:
    await register(client)
    other = user_payload(**{"username": "someone", "email": "someone@example.com", field: value})
    response = await client.post(REGISTER, json=other)
    assert response.status_code == 409
    assert response.json()["code"] == code
    assert await count_users(app) == 1


@pytest.mark.parametrize(
    "extra",
    [
        {"is_superuser": True},
        {"is_staff": True},
        {"id": 7},
        {"is_active": False},
        {"date_joined": "2020-01-01T00:00:00Z"},
        {"avatar": "x.png"},
    ],
)
async def test_unknown_or_privileged_fields_are_422(
    client: httpx.AsyncClient, app: FastAPI, extra: dict[str, Any]
) -> None:
    response = await client.post(REGISTER, json=user_payload(**extra))
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "validation_error"
    assert body["detail"][0]["type"] == "extra_forbidden"
    assert await count_users(app) == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("username", "bad name"),
        ("username", "a" * 151),
        ("username", ""),
        ("username", "bob\x00"),
        ("email", "not-an-email"),
        ("email", "a" * 190 + "@example.com"),
        ("email", "bo\x00b@example.com"),
        ("first_name", "x" * 201),
        ("first_name", "Al\x00ice"),
        ("last_name", "Lid\x07dell"),
        ("last_name", "\x1b[31mred"),
        ("first_name", "\u202egnp.exe"),  # right-to-left override
        ("last_name", "Lid\u200bdell"),  # zero-width space
        ("first_name", "A\u2028B"),  # line separator
        ("number_phone", "12345678901"),
        ("number_phone", "555-1234"),
        ("number_phone", "١٢٣"),
        ("password", 12345678),
        ("username", None),
    ],
)
async def test_invalid_fields_are_422(
    client: httpx.AsyncClient, app: FastAPI, field: str, value: Any
) -> None:
    response = await client.post(REGISTER, json=user_payload(**{field: value}))
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "validation_error"
    assert body["detail"][0]["loc"] == ["body", field]
    assert await count_users(app) == 0


async def test_missing_fields_are_422(client: httpx.AsyncClient) -> None:
    response = await client.post(REGISTER, json={})
    assert response.status_code == 422
    missing = {tuple(error["loc"]) for error in response.json()["detail"]}
    assert missing == {("body", "username"), ("body", "email"), ("body", "password")}


@pytest.mark.parametrize(
    ("password", "code"),
    [
        ("short7!", "password_too_short"),
        ("x" * 129, "string_too_long"),
        ("1234567890123", "password_entirely_numeric"),
        ("password123", "password_too_common"),
        ("Liverpool", "password_too_common"),
        ("alice.liddell", "password_too_similar"),
        ("alice@example.com", "password_too_similar"),
    ],
)
async def test_password_rules(
    client: httpx.AsyncClient, app: FastAPI, password: str, code: str
) -> None:
    payload = user_payload(username="alice.liddell", password=password)
    response = await client.post(REGISTER, json=payload)
    assert response.status_code == 422, response.text
    body = response.json()
    codes = {error["type"] for error in body["detail"]}
    assert code in codes
    assert all(error["loc"] == ["body", "password"] for error in body["detail"])
    assert password not in response.text
    assert await count_users(app) == 0


async def test_validation_errors_never_echo_the_password(client: httpx.AsyncClient) -> None:
    secret = "hunter2-my-secret-password"
    response = await client.post(
        REGISTER, json=user_payload(password=secret, email="not an email", extra="x")
    )
    assert response.status_code == 422
    assert secret not in response.text
    assert all("input" not in error for error in response.json()["detail"])


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b'{"username": "alice",', "application/json"),
        (b"not json at all", "application/json"),
        (b"", "application/json"),
        (b"[1, 2, 3]", "application/json"),
        (b'"a string"', "application/json"),
        (b"\xff\xfe\xfd", "application/json"),
        (b"username=alice", "application/x-www-form-urlencoded"),
    ],
)
async def test_malformed_bodies_are_4xx(
    client: httpx.AsyncClient, app: FastAPI, content: bytes, content_type: str
) -> None:
    response = await client.post(REGISTER, content=content, headers={"content-type": content_type})
    # A form is refused for its media type (415), before it is read.
    assert response.status_code in ((415,) if "form" in content_type else (400, 422))
    assert "detail" in response.json()
    assert await count_users(app) == 0


async def test_concurrent_registrations_with_one_email(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    """Ten at once, the email in different letter case: one 201, nine 409, one row."""
    variants = [
        "carol@example.com",
        "Carol@example.com",
        "CAROL@example.com",
        "carol@EXAMPLE.com",
        "cArol@example.com",
        "caRol@example.com",
        "carOl@example.com",
        "caroL@example.com",
        "CaRoL@ExAmPlE.CoM",
        " carol@example.com ",
    ]
    responses = await asyncio.gather(
        *(
            client.post(REGISTER, json=user_payload(username=f"carol{i}", email=email))
            for i, email in enumerate(variants)
        )
    )
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [201] + [409] * 9, [r.text for r in responses]
    assert {r.json()["code"] for r in responses if r.status_code == 409} == {"email_taken"}
    assert await count_users(app) == 1


async def test_concurrent_registrations_with_one_username(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    responses = await asyncio.gather(
        *(
            client.post(REGISTER, json=user_payload(username="dave", email=f"d{i}@example.com"))
            for i in range(10)
        )
    )
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [201] + [409] * 9
    assert await count_users(app) == 1


async def test_ids_of_deleted_users_are_never_reused(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    """A token verified by another service must never come to mean somebody else."""
    first = await register(client)
    second = await register(client, username="bob", email="bob@example.com")
    async with resources_of(app).sessionmaker() as db, db.begin():
        await db.execute(delete(User).where(User.id == second["id"]))
    third = await register(client, username="carol", email="carol@example.com")
    assert third["id"] > second["id"] > first["id"]
