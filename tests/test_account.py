"""The signed-in user's account: profile update, password change, account deletion."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import (
    PASSWORD,
    access_token,
    add_user,
    bearer,
    login,
    set_columns,
    state,
    user_payload,
)
from tests.test_register import PUBLIC_FIELDS

PROFILE = "/api/v1/users/profile"
PASSWORD_URL = "/api/v1/users/profile/password"
NEW_PASSWORD = "another-Fine-passphrase-42"


@pytest.fixture
async def alice(app: FastAPI) -> dict[str, Any]:
    user = await add_user(app)
    user["token"] = await access_token(app)
    return user


async def patch(
    client: httpx.AsyncClient, token: str, body: dict[str, Any] | bytes
) -> httpx.Response:
    if isinstance(body, bytes):
        return await client.patch(
            PROFILE, content=body, headers={**bearer(token), "content-type": "application/json"}
        )
    return await client.patch(PROFILE, json=body, headers=bearer(token))


# --- PATCH /users/profile ---------------------------------------------------------------


async def test_update_names_and_phone_without_password(
    client: httpx.AsyncClient, alice: dict[str, Any]
) -> None:
    response = await patch(
        client, alice["token"], {"first_name": " Alicia ", "last_name": "", "number_phone": "42"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == PUBLIC_FIELDS
    assert (body["first_name"], body["last_name"], body["number_phone"]) == ("Alicia", "", "42")
    assert body["email"] == "alice@example.com"  # untouched
    again = await client.get(PROFILE, headers=bearer(alice["token"]))
    assert again.json() == body


async def test_empty_patch_changes_nothing(
    client: httpx.AsyncClient, app: FastAPI, alice: dict[str, Any]
) -> None:
    before = await state(app)
    response = await patch(client, alice["token"], {})
    assert response.status_code == 200
    assert await state(app) == before


async def test_change_email_and_username_with_the_current_password(
    client: httpx.AsyncClient, alice: dict[str, Any]
) -> None:
    response = await patch(
        client,
        alice["token"],
        {"email": " New@Example.COM ", "username": "alice2", "current_password": PASSWORD},
    )
    assert response.status_code == 200, response.text
    assert response.json()["email"] == "new@example.com"
    assert response.json()["username"] == "alice2"
    await login(client, "alice2")
    await login(client, "NEW@example.com")
    old = await client.post("/api/v1/auth/token", json={"username": "alice", "password": PASSWORD})
    assert old.status_code == 401


async def test_same_email_in_another_case_is_not_a_change(
    client: httpx.AsyncClient, alice: dict[str, Any]
) -> None:
    response = await patch(
        client, alice["token"], {"email": "ALICE@example.com", "username": "alice"}
    )
    assert response.status_code == 200
    assert response.json()["email"] == "alice@example.com"


@pytest.mark.parametrize(
    "body",
    [
        {"email": "new@example.com"},
        {"username": "alice2"},
        {"email": "new@example.com", "current_password": "wrong-password-1"},
        {"username": "alice2", "first_name": "X", "current_password": "wrong-password-1"},
        {"first_name": "X", "current_password": "wrong-password-1"},
    ],
)
async def test_missing_or_wrong_current_password_is_403_and_changes_nothing(
    client: httpx.AsyncClient, app: FastAPI, alice: dict[str, Any], body: dict[str, Any]
) -> None:
    before = await state(app)
    response = await patch(client, alice["token"], body)
    assert response.status_code == 403
    assert response.json()["code"] == "invalid_current_password"
    assert "wrong-password-1" not in response.text
    assert await state(app) == before


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [("username", "bob", "username_taken"), ("email", "BOB@Example.com", "email_taken")],
)
async def test_taken_username_or_email_is_409(
    client: httpx.AsyncClient,
    app: FastAPI,
    alice: dict[str, Any],
    field: str,
    value: str,
    code: str,
) -> None:
    await add_user(app, username="bob", email="bob@example.com")
    before = await state(app)
    response = await patch(
        client, alice["token"], {field: value, "first_name": "X", "current_password": PASSWORD}
    )
    assert response.status_code == 409
    assert response.json()["code"] == code
    assert await state(app) == before


async def test_concurrent_updates_to_one_email(client: httpx.AsyncClient, app: FastAPI) -> None:
    """Five users claim one email at once (in different cases): one wins, four get 409."""
    tokens = []
    for i in range(5):
        await add_user(app, username=f"user{i}", email=f"user{i}@example.com")
        tokens.append(await access_token(app, f"user{i}"))
    variants = [
        "x@example.com",
        "X@example.com",
        "x@EXAMPLE.com",
        "X@Example.Com",
        " x@example.com ",
    ]
    responses = await asyncio.gather(
        *(
            patch(client, token, {"email": email, "current_password": PASSWORD})
            for token, email in zip(tokens, variants, strict=True)
        )
    )
    assert sorted(r.status_code for r in responses) == [200] + [409] * 4, [
        r.text for r in responses
    ]
    assert {r.json()["code"] for r in responses if r.status_code == 409} == {"email_taken"}
    rows, _ = await state(app)
    assert [row["email"] for row in rows].count("x@example.com") == 1


@pytest.mark.parametrize(
    "extra",
    [
        {"is_staff": True},
        {"is_superuser": True},
        {"is_active": False},
        {"id": 99},
        {"password": "Something-new-123"},
        {"date_joined": "2020-01-01T00:00:00Z"},
        {"last_login": None},
        {"avatar": "avatars/x.png"},
        {"unknown": 1},
    ],
)
async def test_unknown_or_privileged_fields_are_422(
    client: httpx.AsyncClient, app: FastAPI, alice: dict[str, Any], extra: dict[str, Any]
) -> None:
    before = await state(app)
    response = await patch(client, alice["token"], {"first_name": "X", **extra})
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "validation_error"
    assert body["detail"][0]["type"] == "extra_forbidden"
    assert "Something-new-123" not in response.text
    assert await state(app) == before


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("username", "bad name"),
        ("username", "a" * 151),
        ("username", ""),
        ("username", None),
        ("email", "not-an-email"),
        ("email", "a" * 190 + "@example.com"),
        ("email", None),
        ("first_name", "x" * 201),
        ("first_name", "Al\x00ice"),
        ("first_name", None),
        ("last_name", 5),
        ("number_phone", "12345678901"),
        ("number_phone", "555-1234"),
        ("current_password", ""),
        ("current_password", "x" * 4097),
    ],
)
async def test_invalid_fields_are_422(
    client: httpx.AsyncClient, app: FastAPI, alice: dict[str, Any], field: str, value: Any
) -> None:
    before = await state(app)
    response = await patch(client, alice["token"], {"current_password": PASSWORD, field: value})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "validation_error"
    assert body["detail"][0]["loc"] == ["body", field]
    assert PASSWORD not in response.text
    assert await state(app) == before


@pytest.mark.parametrize("content", [b"[1]", b"not json", b'{"first_name": ', b'"x"'])
async def test_malformed_patch_bodies_are_422(
    client: httpx.AsyncClient, app: FastAPI, alice: dict[str, Any], content: bytes
) -> None:
    before = await state(app)
    response = await patch(client, alice["token"], content)
    assert response.status_code == 422
    assert await state(app) == before


@pytest.mark.parametrize(
    ("method", "url", "body"),
    [
        ("PATCH", PROFILE, {"first_name": "X"}),
        ("POST", PASSWORD_URL, {"current_password": PASSWORD, "new_password": NEW_PASSWORD}),
        ("DELETE", PROFILE, {"current_password": PASSWORD}),
        ("PUT", f"{PROFILE}/avatar", None),
        ("DELETE", f"{PROFILE}/avatar", None),
    ],
)
async def test_account_routes_need_a_token(
    client: httpx.AsyncClient,
    app: FastAPI,
    alice: dict[str, Any],
    method: str,
    url: str,
    body: dict[str, Any] | None,
) -> None:
    before = await state(app)
    response = await client.request(method, url, json=body)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert await state(app) == before


# --- POST /users/profile/password -------------------------------------------------------


async def test_change_password(client: httpx.AsyncClient, alice: dict[str, Any]) -> None:
    response = await client.post(
        PASSWORD_URL,
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=bearer(alice["token"]),
    )
    assert response.status_code == 204
    assert response.content == b""
    old = await client.post("/api/v1/auth/token", json={"username": "alice", "password": PASSWORD})
    assert old.status_code == 401
    assert old.json()["code"] == "invalid_credentials"
    await login(client, "alice", NEW_PASSWORD)


async def test_change_password_with_a_wrong_current_password_is_403(
    client: httpx.AsyncClient, app: FastAPI, alice: dict[str, Any]
) -> None:
    before = await state(app)
    response = await client.post(
        PASSWORD_URL,
        json={"current_password": "not-the-password", "new_password": NEW_PASSWORD},
        headers=bearer(alice["token"]),
    )
    assert response.status_code == 403
    assert response.json() == {
        "detail": "The current password is incorrect",
        "code": "invalid_current_password",
    }
    assert await state(app) == before
    await login(client)


@pytest.mark.parametrize(
    ("new_password", "code"),
    [
        ("short7!", "password_too_short"),
        ("1234567890123", "password_entirely_numeric"),
        ("password123", "password_too_common"),
        ("alice.liddell", "password_too_similar"),
        ("x" * 129, "string_too_long"),
        ("", "string_too_short"),
    ],
)
async def test_new_password_follows_the_registration_rules(
    client: httpx.AsyncClient, app: FastAPI, alice: dict[str, Any], new_password: str, code: str
) -> None:
    before = await state(app)
    response = await client.post(
        PASSWORD_URL,
        json={"current_password": PASSWORD, "new_password": new_password},
        headers=bearer(alice["token"]),
    )
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "validation_error"
    assert code in {error["type"] for error in body["detail"]}
    assert all(error["loc"] == ["body", "new_password"] for error in body["detail"])
    assert PASSWORD not in response.text
    if new_password:
        assert new_password not in response.text
    assert await state(app) == before


@pytest.mark.parametrize(
    "body",
    [
        {"new_password": NEW_PASSWORD},
        {"current_password": PASSWORD},
        {"current_password": PASSWORD, "new_password": NEW_PASSWORD, "username": "x"},
        {"current_password": 1234, "new_password": NEW_PASSWORD},
    ],
)
async def test_change_password_bad_bodies_are_422(
    client: httpx.AsyncClient, app: FastAPI, alice: dict[str, Any], body: dict[str, Any]
) -> None:
    before = await state(app)
    response = await client.post(PASSWORD_URL, json=body, headers=bearer(alice["token"]))
    assert response.status_code == 422
    assert await state(app) == before


# --- DELETE /users/profile --------------------------------------------------------------


async def test_delete_account(client: httpx.AsyncClient, app: FastAPI) -> None:
    await add_user(app, username="bob", email="bob@example.com")
    await add_user(app)
    token = await access_token(app)
    response = await client.request(
        "DELETE", PROFILE, json={"current_password": PASSWORD}, headers=bearer(token)
    )
    assert response.status_code == 204
    assert response.content == b""

    gone = await client.get(PROFILE, headers=bearer(token))
    assert gone.status_code == 404
    assert gone.json() == {"detail": "User not found", "code": "user_not_found"}
    refused = await client.post(
        "/api/v1/auth/token", json={"username": "alice", "password": PASSWORD}
    )
    assert refused.status_code == 401
    assert refused.json()["code"] == "invalid_credentials"
    rows, _ = await state(app)
    assert [row["username"] for row in rows] == ["bob"]

    again = await client.post("/api/v1/auth/register", json=user_payload())
    assert again.status_code == 201
    await login(client)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"current_password": "not-the-password"}, 403, "invalid_current_password"),
        ({}, 422, "validation_error"),
        ({"current_password": ""}, 422, "validation_error"),
        ({"current_password": PASSWORD, "id": 2}, 422, "validation_error"),
        (None, 422, "validation_error"),
    ],
)
async def test_delete_account_refused(
    client: httpx.AsyncClient,
    app: FastAPI,
    alice: dict[str, Any],
    body: dict[str, Any] | None,
    status: int,
    code: str,
) -> None:
    before = await state(app)
    response = await client.request("DELETE", PROFILE, json=body, headers=bearer(alice["token"]))
    assert response.status_code == status
    assert response.json()["code"] == code
    assert await state(app) == before


async def test_the_last_active_superuser_cannot_delete_their_account(
    client: httpx.AsyncClient, app: FastAPI, alice: dict[str, Any]
) -> None:
    await set_columns(app, "alice", is_superuser=True, is_staff=True)
    before = await state(app)
    response = await client.request(
        "DELETE", PROFILE, json={"current_password": PASSWORD}, headers=bearer(alice["token"])
    )
    assert response.status_code == 409
    assert response.json()["code"] == "last_superuser"
    assert await state(app) == before
