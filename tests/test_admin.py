"""User management: staff read, superusers change; the last active superuser is kept."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.repositories import user_search
from app.resources import resources_of
from tests.conftest import (
    PASSWORD,
    access_token,
    add_user,
    bearer,
    media_files,
    set_columns,
    state,
)
from tests.test_avatar import png, upload_files

USERS = "/api/v1/users"


@pytest.fixture
async def root(app: FastAPI) -> str:
    """A superuser's token (user 1, 'root')."""
    await add_user(
        app,
        username="root",
        email="root@example.com",
        first_name="Root",
        is_staff=True,
        is_superuser=True,
    )
    return await access_token(app, "root")


@pytest.fixture
async def staff(app: FastAPI, root: str) -> str:
    await add_user(
        app, username="staffer", email="staff@example.com", first_name="Sam", is_staff=True
    )
    return await access_token(app, "staffer")


@pytest.fixture
async def alice(app: FastAPI, root: str) -> dict[str, Any]:
    user = await add_user(app)
    user["token"] = await access_token(app)
    return user


# --- permissions -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", USERS, None),
        ("GET", f"{USERS}/1", None),
        ("PATCH", f"{USERS}/1", {"first_name": "X"}),
        ("DELETE", f"{USERS}/1", None),
    ],
)
async def test_non_staff_is_403(
    client: httpx.AsyncClient,
    app: FastAPI,
    alice: dict[str, Any],
    method: str,
    path: str,
    body: dict[str, Any] | None,
) -> None:
    before = await state(app)
    response = await client.request(method, path, json=body, headers=bearer(alice["token"]))
    assert response.status_code == 403
    assert response.json() == {
        "detail": "You do not have permission to perform this action",
        "code": "permission_denied",
    }
    assert await state(app) == before


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [("PATCH", f"{USERS}/3", {"first_name": "X"}), ("DELETE", f"{USERS}/3", None)],
)
async def test_staff_cannot_change(
    client: httpx.AsyncClient,
    app: FastAPI,
    staff: str,
    alice: dict[str, Any],
    method: str,
    path: str,
    body: dict[str, Any] | None,
) -> None:
    before = await state(app)
    response = await client.request(method, path, json=body, headers=bearer(staff))
    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"
    assert await state(app) == before


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
async def test_no_token_is_401(client: httpx.AsyncClient, root: str, method: str) -> None:
    response = await client.request(method, f"{USERS}/1", json={} if method == "PATCH" else None)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


# --- reading -----------------------------------------------------------------------------


async def test_staff_reads_one_user(
    client: httpx.AsyncClient, staff: str, alice: dict[str, Any]
) -> None:
    response = await client.get(f"{USERS}/{alice['id']}", headers=bearer(staff))
    assert response.status_code == 200
    body = response.json()
    assert body["username"] == "alice"
    assert "password" not in body


async def test_missing_user_is_404(client: httpx.AsyncClient, root: str) -> None:
    for method, body in (("GET", None), ("PATCH", {"first_name": "X"}), ("DELETE", None)):
        response = await client.request(method, f"{USERS}/999", json=body, headers=bearer(root))
        assert response.status_code == 404
        assert response.json() == {"detail": "User not found", "code": "user_not_found"}


BAD_IDS = ["0", "-1", "9223372036854775808", "99999999999999999999999", "abc", "1.0", "1.5",
           "+1", "1_0", "1e3", "%C2%B9", "0x1", "%201"]  # fmt: skip


async def test_bad_ids_are_422(client: httpx.AsyncClient, app: FastAPI, root: str) -> None:
    before = await state(app)
    for user_id in BAD_IDS:
        for method, body in (("GET", None), ("PATCH", {"first_name": "X"}), ("DELETE", None)):
            response = await client.request(
                method, f"{USERS}/{user_id}", json=body, headers=bearer(root)
            )
            assert response.status_code == 422, (method, user_id, response.text)
            assert response.json()["code"] == "validation_error"
            assert response.json()["detail"][0]["loc"] == ["path", "user_id"]
    assert await state(app) == before


async def test_largest_id_is_a_404_not_a_database_error(
    client: httpx.AsyncClient, root: str
) -> None:
    response = await client.get(f"{USERS}/9223372036854775807", headers=bearer(root))
    assert response.status_code == 404


async def list_users(client: httpx.AsyncClient, token: str, **params: Any) -> httpx.Response:
    return await client.get(USERS, params=params, headers=bearer(token))


async def usernames(client: httpx.AsyncClient, token: str, **params: Any) -> list[str]:
    response = await list_users(client, token, **params)
    assert response.status_code == 200, response.text
    return [user["username"] for user in response.json()["items"]]


@pytest.fixture
async def crowd(app: FastAPI, root: str) -> str:
    """root (1) plus: bob (2), carol_x (3, inactive), dan (4, staff, first name '100%'),
    erin (5, last name 'O_Neil'). root, then bob, have logged in."""
    await add_user(app, username="bob", email="bob@example.com", first_name="Bob")
    await add_user(
        app, username="carol_x", email="carol@corp.example", first_name="Carol", is_active=False
    )
    await add_user(app, username="dan", email="dan@example.com", first_name="100%", is_staff=True)
    await add_user(app, username="erin", email="erin@example.com", last_name="O_Neil")
    await access_token(app, "bob")
    return root


async def test_list_defaults(client: httpx.AsyncClient, crowd: str) -> None:
    response = await list_users(client, crowd)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"items", "total", "limit", "offset"}
    assert (body["total"], body["limit"], body["offset"]) == (5, 20, 0)
    assert [user["username"] for user in body["items"]] == ["root", "bob", "carol_x", "dan", "erin"]


async def test_staff_may_list(client: httpx.AsyncClient, app: FastAPI, crowd: str) -> None:
    token = await access_token(app, "dan")
    assert len(await usernames(client, token)) == 5


SEARCHES = [
    ("BOB", ["bob"]),
    ("corp.EXAMPLE", ["carol_x"]),
    ("carol", ["carol_x"]),
    ("o_n", ["erin"]),
    ("%", ["dan"]),
    ("100%", ["dan"]),
    ("_", ["carol_x", "erin"]),
    ("/", []),
    ("\\", []),
    ("r%t", []),
    ("b_b", []),
    ("   ", ["root", "bob", "carol_x", "dan", "erin"]),
    ("nobody", []),
    ("bob bob", []),  # username then email: in no single column
]


async def test_search(client: httpx.AsyncClient, crowd: str) -> None:
    """Case-insensitive substring; % _ / and backslash only match themselves."""
    for search, expected in SEARCHES:
        response = await list_users(client, crowd, search=search)
        assert [user["username"] for user in response.json()["items"]] == expected, search
        assert response.json()["total"] == len(expected)


async def test_total_is_capped_on_postgresql(
    client: httpx.AsyncClient, app: FastAPI, crowd: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL: exact up to TOTAL_CAP matches, TOTAL_CAP + 1 past it; the pages are whole."""
    monkeypatch.setattr(user_search, "TOTAL_CAP", 2)
    capped = resources_of(app).engine.dialect.name == "postgresql"
    body = (await list_users(client, crowd)).json()
    assert [user["username"] for user in body["items"]] == ORDERINGS[0][1]
    assert body["total"] == (3 if capped else 5)
    body = (await list_users(client, crowd, search="_", ordering="-id")).json()
    assert ([user["username"] for user in body["items"]], body["total"]) == (["erin", "carol_x"], 2)
    assert (await list_users(client, crowd, search="e", limit=1, offset=1)).json()["items"]


def test_search_document_is_the_indexed_expression() -> None:
    path = Path(__file__).parent.parent / "alembic/versions/0003_users_search_trigram_indexes.py"
    spec = importlib.util.spec_from_file_location("migration_0003", path)
    assert spec is not None
    assert spec.loader is not None
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    assert migration.DOCUMENT == user_search.SEARCH_DOCUMENT_SQL


async def test_filters(client: httpx.AsyncClient, crowd: str) -> None:
    assert await usernames(client, crowd, is_active="false") == ["carol_x"]
    assert await usernames(client, crowd, is_staff="true") == ["root", "dan"]
    assert await usernames(client, crowd, is_staff="false", is_active="true") == ["bob", "erin"]
    assert await usernames(client, crowd, search="example.com", is_staff="false") == [
        "bob",
        "erin",
    ]


ORDERINGS = [
    ("id", ["root", "bob", "carol_x", "dan", "erin"]),
    ("-id", ["erin", "dan", "carol_x", "bob", "root"]),
    ("username", ["bob", "carol_x", "dan", "erin", "root"]),
    ("-username", ["root", "erin", "dan", "carol_x", "bob"]),
    ("email", ["bob", "carol_x", "dan", "erin", "root"]),
    ("-date_joined", ["erin", "dan", "carol_x", "bob", "root"]),
    # root and bob logged in (bob last); the others never did: they come last, by id
    ("last_login", ["root", "bob", "carol_x", "dan", "erin"]),
    ("-last_login", ["bob", "root", "erin", "dan", "carol_x"]),
]


async def test_ordering(client: httpx.AsyncClient, crowd: str) -> None:
    for ordering, expected in ORDERINGS:
        assert await usernames(client, crowd, ordering=ordering) == expected, ordering


async def test_paging(client: httpx.AsyncClient, crowd: str) -> None:
    response = await list_users(client, crowd, limit=2, offset=3)
    body = response.json()
    assert [user["username"] for user in body["items"]] == ["dan", "erin"]
    assert (body["total"], body["limit"], body["offset"]) == (5, 2, 3)
    assert await usernames(client, crowd, offset=50) == []
    assert await usernames(client, crowd, offset=9223372036854775807) == []
    assert len(await usernames(client, crowd, limit=100)) == 5


BAD_QUERIES: list[dict[str, Any]] = [
    {"ordering": "password"},
    {"ordering": "id; DROP TABLE users"},
    {"ordering": "--id"},
    {"ordering": ""},
    {"limit": 0},
    {"limit": 101},
    {"limit": "ten"},
    {"offset": -1},
    {"offset": 9223372036854775808},
    {"is_active": "maybe"},
    {"search": "x" * 201},
    {"search": "a\x00b"},
    {"page": 2},
]


async def test_bad_list_queries_are_422(client: httpx.AsyncClient, root: str) -> None:
    for params in BAD_QUERIES:
        response = await list_users(client, root, **params)
        assert response.status_code == 422, (params, response.text)
        assert response.json()["code"] == "validation_error"


# --- changing ----------------------------------------------------------------------------


async def test_superuser_updates_profile_fields_and_flags(
    client: httpx.AsyncClient, root: str, alice: dict[str, Any]
) -> None:
    response = await client.patch(
        f"{USERS}/{alice['id']}",
        json={"first_name": "Al", "email": "AL@example.com", "is_staff": True},
        headers=bearer(root),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["first_name"], body["email"], body["is_staff"]) == ("Al", "al@example.com", True)
    assert body["is_superuser"] is False
    profile = await client.get("/api/v1/users/profile", headers=bearer(alice["token"]))
    assert profile.json()["is_staff"] is True


async def test_deactivation_stops_the_users_tokens_at_once(
    client: httpx.AsyncClient, root: str, alice: dict[str, Any]
) -> None:
    response = await client.patch(
        f"{USERS}/{alice['id']}", json={"is_active": False}, headers=bearer(root)
    )
    assert response.status_code == 200
    assert response.json()["is_active"] is False
    refused = await client.get("/api/v1/users/profile", headers=bearer(alice["token"]))
    assert refused.status_code == 401
    assert refused.json()["code"] == "inactive_user"
    login_refused = await client.post(
        "/api/v1/auth/token", json={"username": "alice", "password": PASSWORD}
    )
    assert login_refused.status_code == 401
    # reactivation does not revive the old session: deactivation ended it
    reactivated = await client.patch(
        f"{USERS}/{alice['id']}", json={"is_active": True}, headers=bearer(root)
    )
    assert reactivated.status_code == 200
    stale = await client.get("/api/v1/users/profile", headers=bearer(alice["token"]))
    assert stale.status_code == 401
    assert stale.json()["code"] == "session_revoked"


async def test_demoted_staff_loses_access_at_once(
    client: httpx.AsyncClient, root: str, staff: str
) -> None:
    assert (await list_users(client, staff)).status_code == 200
    await client.patch(f"{USERS}/2", json={"is_staff": False}, headers=bearer(root))
    assert (await list_users(client, staff)).status_code == 403


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"username": "root"}, "username_taken"),
        ({"email": "ROOT@example.com"}, "email_taken"),
    ],
)
async def test_admin_update_conflicts_are_409(
    client: httpx.AsyncClient, app: FastAPI, root: str, alice: dict[str, Any], body: Any, code: str
) -> None:
    before = await state(app)
    response = await client.patch(
        f"{USERS}/{alice['id']}", json={**body, "is_staff": True}, headers=bearer(root)
    )
    assert response.status_code == 409
    assert response.json()["code"] == code
    assert await state(app) == before


@pytest.mark.parametrize(
    "body",
    [
        {"password": "Another-one-123"},
        {"id": 5},
        {"date_joined": "2020-01-01T00:00:00Z"},
        {"avatar": "avatars/a.png"},
        {"is_active": None},
        {"is_staff": "yes"},
        {"is_superuser": 1},
        {"username": "bad name"},
        {"email": None},
        {"current_password": PASSWORD},
    ],
)
async def test_admin_update_bad_bodies_are_422(
    client: httpx.AsyncClient, app: FastAPI, root: str, alice: dict[str, Any], body: Any
) -> None:
    before = await state(app)
    response = await client.patch(f"{USERS}/{alice['id']}", json=body, headers=bearer(root))
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"
    assert "Another-one-123" not in response.text
    assert await state(app) == before


async def test_superuser_deletes_a_user_and_their_avatar(
    client: httpx.AsyncClient, app: FastAPI, root: str, alice: dict[str, Any]
) -> None:
    uploaded = await client.put(
        "/api/v1/users/profile/avatar", files=upload_files(png()), headers=bearer(alice["token"])
    )
    assert uploaded.status_code == 200
    response = await client.delete(f"{USERS}/{alice['id']}", headers=bearer(root))
    assert response.status_code == 204
    assert response.content == b""
    assert media_files(app) == {}
    gone = await client.get("/api/v1/users/profile", headers=bearer(alice["token"]))
    assert gone.status_code == 404
    assert (await client.get(f"{USERS}/{alice['id']}", headers=bearer(root))).status_code == 404


# --- the last active superuser ------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "body"),
    [
        ("PATCH", {"is_active": False}),
        ("PATCH", {"is_superuser": False}),
        ("PATCH", {"is_superuser": False, "is_active": False, "first_name": "Gone"}),
        ("DELETE", None),
    ],
)
async def test_the_last_active_superuser_is_kept(
    client: httpx.AsyncClient,
    app: FastAPI,
    root: str,
    alice: dict[str, Any],
    method: str,
    body: dict[str, Any] | None,
) -> None:
    await set_columns(app, "alice", is_superuser=True, is_active=False)  # inactive: not counted
    before = await state(app)
    response = await client.request(method, f"{USERS}/1", json=body, headers=bearer(root))
    assert response.status_code == 409
    assert response.json() == {
        "detail": "The last active superuser cannot be deactivated, demoted or deleted",
        "code": "last_superuser",
    }
    assert await state(app) == before


async def test_one_of_two_superusers_may_go(
    client: httpx.AsyncClient, app: FastAPI, root: str, alice: dict[str, Any]
) -> None:
    await set_columns(app, "alice", is_superuser=True)
    response = await client.patch(f"{USERS}/1", json={"is_superuser": False}, headers=bearer(root))
    assert response.status_code == 200
    assert response.json()["is_superuser"] is False
    # root is no longer a superuser: its token now only reads as staff
    assert (await client.delete(f"{USERS}/2", headers=bearer(root))).status_code == 403


async def test_staff_flag_of_the_last_superuser_may_change(
    client: httpx.AsyncClient, root: str
) -> None:
    response = await client.patch(f"{USERS}/1", json={"is_staff": False}, headers=bearer(root))
    assert response.status_code == 200


async def test_two_superusers_demoting_each_other_at_once_keep_one(
    client: httpx.AsyncClient, app: FastAPI, root: str, alice: dict[str, Any]
) -> None:
    await set_columns(app, "alice", is_superuser=True)
    responses = await asyncio.gather(
        client.patch(f"{USERS}/2", json={"is_superuser": False}, headers=bearer(root)),
        client.patch(f"{USERS}/1", json={"is_superuser": False}, headers=bearer(alice["token"])),
        client.delete(f"{USERS}/2", headers=bearer(root)),
        client.delete(f"{USERS}/1", headers=bearer(alice["token"])),
    )
    statuses = [response.status_code for response in responses]
    assert 500 not in statuses, [response.text for response in responses]
    rows, _ = await state(app)
    assert sum(1 for row in rows if row["is_superuser"] and row["is_active"]) == 1
