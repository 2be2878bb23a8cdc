"""Security activity (issue 13): the audit trail written with each change, the session list
and ending one session, staff's views, the retention purge, and the security notices
through a real SMTP server. Both backends."""

from __future__ import annotations

import dataclasses
import io
import json
import subprocess
import sys
from datetime import timedelta
from typing import Any

import httpx
from fastapi import FastAPI
from PIL import Image
from sqlalchemy import select, update

from app.mail.messages import MailKind
from app.models import AuditEvent, AuthSession, OutboxEmail, User
from app.models.base import utcnow
from app.resources import resources_of, set_resources
from app.services import audit
from app.services.notices import device_family
from tests import mail_app
from tests.conftest import (
    PASSWORD,
    add_user,
    bearer,
    server_env,
    sign_in,
    user_payload,
)
from tests.mail_app import outbox_settled, token_of
from tests.smtp_server import SmtpServer, eventually

pytest_plugins = ["tests.smtp_server"]

module_smtp = mail_app.module_smtp
app_settings = mail_app.app_settings
smtp = mail_app.smtp
client = mail_app.settled_client

LOGIN = "/api/v1/auth/token"
REFRESH = "/api/v1/auth/token/refresh"
SESSIONS = "/api/v1/users/profile/sessions"
EVENTS = "/api/v1/users/profile/events"
STAFF_EVENTS = "/api/v1/events"
NEW_PASSWORD = "another-Good-passphrase-42"
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"
FIREFOX_NEXT = "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0"
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)


async def events(app: FastAPI, event_type: str | None = None) -> list[AuditEvent]:
    async with resources_of(app).sessionmaker() as db:
        query = select(AuditEvent).order_by(AuditEvent.id)
        if event_type is not None:
            query = query.where(AuditEvent.type == event_type)
        return list((await db.scalars(query)).all())


async def the_event(app: FastAPI, event_type: str) -> AuditEvent:
    found = await events(app, event_type)
    assert len(found) == 1, [event.type for event in await events(app)]
    return found[0]


async def login(
    client: httpx.AsyncClient,
    username: str = "alice",
    password: str = PASSWORD,
    user_agent: str = FIREFOX,
) -> httpx.Response:
    return await client.post(
        LOGIN,
        json={"username": username, "password": password},
        headers={"User-Agent": user_agent},
    )


async def tokens(client: httpx.AsyncClient, user_agent: str = FIREFOX, **kw: str) -> Any:
    response = await login(client, user_agent=user_agent, **kw)
    assert response.status_code == 200, response.text
    return response.json()


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, "PNG")
    return buffer.getvalue()


# --- each event type from its action ---------------------------------------------------


async def test_registration_and_login_record_who_from_where(
    app: FastAPI, client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    response = await client.post(
        "/api/v1/auth/register",
        json=user_payload(),
        headers={"User-Agent": FIREFOX, "X-Request-ID": "req-register-1"},
    )
    assert response.status_code == 201, response.text
    user_id = response.json()["id"]
    registered = await the_event(app, "user.registered")
    assert (registered.user_id, registered.actor_id) == (user_id, user_id)
    assert registered.ip == "127.0.0.1"
    assert registered.user_agent == FIREFOX
    assert registered.request_id == "req-register-1"

    response = await login(client)
    assert response.status_code == 200
    succeeded = await the_event(app, "login.succeeded")
    assert (succeeded.user_id, succeeded.actor_id) == (user_id, user_id)
    assert succeeded.request_id == response.headers["X-Request-ID"]
    assert succeeded.details["new_device"] is False  # the first sign-in ever
    async with resources_of(app).sessionmaker() as db:
        [row] = (await db.scalars(select(AuthSession))).all()
    assert succeeded.details["session_id"] == str(row.id)
    assert (row.ip, row.user_agent) == ("127.0.0.1", FIREFOX)


async def test_failed_logins_are_kept_although_the_request_fails(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    alice = await add_user(app)
    assert (await login(client, password="wrong-password-1")).status_code == 401
    failed = await the_event(app, "login.failed")
    assert (failed.user_id, failed.actor_id) == (alice["id"], None)
    assert failed.details == {"reason": "password"}

    assert (await login(client, username="nobody@example.com")).status_code == 401
    unknown = (await events(app, "login.failed"))[1]
    assert unknown.user_id is None
    assert unknown.details == {"reason": "unknown_account"}
    assert "nobody" not in json.dumps(unknown.details)  # no identifier of no account

    await add_user(app, username="bob", email="bob@example.com", is_active=False)
    assert (await login(client, username="bob")).status_code == 401
    assert (await events(app, "login.failed"))[2].details == {"reason": "inactive"}


async def test_a_throttled_login_is_recorded_once_a_minute(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    alice = await add_user(app)
    limit = int(resources_of(app).settings.login_limit_per_account.split("/")[0])
    statuses = [
        (await login(client, password=f"wrong-{n}-pass")).status_code for n in range(limit + 3)
    ]
    assert statuses[-3:] == [429, 429, 429], statuses
    throttled = await the_event(app, "login.throttled")  # one, not three: no flood of writes
    assert throttled.user_id == alice["id"]
    assert throttled.actor_id is None


async def test_refresh_token_reuse_is_recorded_and_told(
    app: FastAPI, client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    alice = await add_user(app)
    first = await tokens(client)
    rotated = await client.post(REFRESH, json={"refresh_token": first["refresh_token"]})
    assert rotated.status_code == 200
    reused = await client.post(
        REFRESH,
        json={"refresh_token": first["refresh_token"]},
        headers={"User-Agent": "replayer/1.0"},
    )
    assert reused.status_code == 401
    assert reused.json()["code"] == "refresh_token_reused"
    event = await the_event(app, "token.reuse_detected")
    assert (event.user_id, event.actor_id) == (alice["id"], None)
    # Where the replay came from (read only on this path, not on every refresh).
    assert (event.ip, event.user_agent) == ("127.0.0.1", "replayer/1.0")
    assert event.request_id == reused.headers["x-request-id"]
    async with resources_of(app).sessionmaker() as db:
        [row] = (await db.scalars(select(AuthSession))).all()
    assert event.details == {"session_id": str(row.id)}
    [notice] = await smtp.wait_for(1)
    assert notice.rcpt_tos == ["alice@example.com"]
    assert "looked stolen" in notice.message["Subject"]
    # The refresh (rotation) moved the session's last use and expiry forward.
    assert row.refreshed_at is not None
    assert row.expires_at > row.refreshed_at


async def test_logout_and_logout_all_end_sessions_on_the_record(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    alice = await add_user(app)
    first = await sign_in(app)
    response = await client.post(
        "/api/v1/auth/logout", json={"refresh_token": first["refresh_token"]}
    )
    assert response.status_code == 204
    ended = await the_event(app, "session.ended")
    assert (ended.user_id, ended.actor_id) == (alice["id"], alice["id"])
    # Idempotent, and only a real end is recorded.
    await client.post("/api/v1/auth/logout", json={"refresh_token": first["refresh_token"]})
    assert len(await events(app, "session.ended")) == 1

    second = await sign_in(app)
    response = await client.post("/api/v1/auth/logout-all", headers=bearer(second["access_token"]))
    assert response.status_code == 204
    all_ended = await the_event(app, "sessions.ended_all")
    assert (all_ended.user_id, all_ended.actor_id) == (alice["id"], alice["id"])


async def test_profile_password_email_avatar_and_deletion_events(
    app: FastAPI, client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    alice = await add_user(app)
    me = alice["id"]
    headers = bearer((await sign_in(app))["access_token"])

    response = await client.patch(
        "/api/v1/users/profile",
        json={"first_name": "Alicia", "email": "alicia@example.com", "current_password": PASSWORD},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    updated = await the_event(app, "profile.updated")
    assert updated.details == {"fields": ["email", "first_name"]}
    assert (updated.user_id, updated.actor_id) == (me, me)
    changed = await the_event(app, "email.changed")
    assert (changed.user_id, changed.actor_id, changed.details) == (me, me, {})

    # The verification link of the new address: following it is recorded.
    link = next(
        word
        for message in await smtp.wait_for(2)
        for word in message.text.split()
        if "token=" in word
    )
    response = await client.post("/api/v1/auth/verify-email", json={"token": token_of(link)})
    assert response.status_code == 204
    assert (await the_event(app, "email.verified")).user_id == me

    response = await client.put(
        "/api/v1/users/profile/avatar",
        files={"file": ("a.png", png(), "image/png")},
        headers=headers,
    )
    assert response.status_code == 200
    response = await client.delete("/api/v1/users/profile/avatar", headers=headers)
    assert response.status_code == 200
    avatar_events = await events(app, "avatar.changed")
    assert [event.details for event in avatar_events] == [{"removed": False}, {"removed": True}]

    response = await client.post(
        "/api/v1/users/profile/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=headers,
    )
    assert response.status_code == 204
    assert (await the_event(app, "password.changed")).actor_id == me

    headers = bearer((await sign_in(app, "alicia@example.com"))["access_token"])
    response = await client.request(
        "DELETE", "/api/v1/users/profile", json={"current_password": NEW_PASSWORD}, headers=headers
    )
    assert response.status_code == 204
    deleted = await the_event(app, "account.deleted")
    assert (deleted.user_id, deleted.actor_id) == (me, me)
    # The trail outlives the account: every earlier event still names it.
    assert {event.user_id for event in await events(app)} == {me}


async def test_a_failed_change_records_nothing(app: FastAPI, client: httpx.AsyncClient) -> None:
    await add_user(app)
    await add_user(app, username="bob", email="bob@example.com")
    headers = bearer((await sign_in(app))["access_token"])
    response = await client.patch(
        "/api/v1/users/profile",
        json={"first_name": "Al", "email": "bob@example.com", "current_password": PASSWORD},
        headers=headers,
    )
    assert response.status_code == 409
    assert await events(app) == []


async def test_password_reset_events(
    app: FastAPI, client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    alice = await add_user(app)
    response = await client.post(
        "/api/v1/auth/password-reset",
        json={"email": "alice@example.com"},
        headers={"User-Agent": CHROME},
    )
    assert response.status_code == 202
    requested = await the_event(app, "password.reset_requested")
    assert (requested.user_id, requested.actor_id) == (alice["id"], None)
    assert requested.user_agent == CHROME  # the request's, although the work ran detached
    [message] = await smtp.wait_for(1)
    link = next(word for word in message.text.split() if "token=" in word)

    # An address of no account records nothing.
    await client.post("/api/v1/auth/password-reset", json={"email": "nobody@example.com"})
    assert len(await events(app, "password.reset_requested")) == 1

    response = await client.post(
        "/api/v1/auth/password-reset/confirm",
        json={"token": token_of(link), "new_password": NEW_PASSWORD},
    )
    assert response.status_code == 204
    completed = await the_event(app, "password.reset_completed")
    assert (completed.user_id, completed.actor_id) == (alice["id"], alice["id"])
    assert await events(app, "password.changed") == []


async def test_admin_changes_record_the_superuser_and_flag_values(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    root = await add_user(app, username="root", email="root@example.com", is_superuser=True)
    alice = await add_user(app)
    headers = bearer((await sign_in(app, "root"))["access_token"])
    response = await client.patch(
        f"/api/v1/users/{alice['id']}",
        json={"is_staff": True, "last_name": "Hargreaves", "email_verified": True},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    event = await the_event(app, "admin.user_updated")
    assert (event.user_id, event.actor_id) == (alice["id"], root["id"])
    assert event.details == {
        "fields": ["is_staff", "last_name"],
        "flags": {
            "is_staff": {"old": False, "new": True},
            "email_verified": {"old": False, "new": True},
        },
    }
    assert "Hargreaves" not in json.dumps(event.details)

    response = await client.delete(f"/api/v1/users/{alice['id']}", headers=headers)
    assert response.status_code == 204
    deleted = await the_event(app, "admin.user_deleted")
    assert (deleted.user_id, deleted.actor_id) == (alice["id"], root["id"])


async def test_no_event_holds_a_secret(
    app: FastAPI, client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    """A whole account's life; then no column of any event holds a password, a token, a
    hash or a changed profile value."""
    response = await client.post("/api/v1/auth/register", json=user_payload())
    assert response.status_code == 201
    pair = await tokens(client)
    await login(client, password="Wrong-guess-123")
    rotated = (await client.post(REFRESH, json={"refresh_token": pair["refresh_token"]})).json()
    await client.post(REFRESH, json={"refresh_token": pair["refresh_token"]})  # reuse
    fresh = await tokens(client, user_agent=CHROME)
    headers = bearer(fresh["access_token"])
    await client.patch(
        "/api/v1/users/profile",
        json={"first_name": "Zebedee", "number_phone": "5550009999"},
        headers=headers,
    )
    await client.post(
        "/api/v1/users/profile/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=headers,
    )
    await client.post("/api/v1/auth/password-reset", json={"email": "alice@example.com"})
    async with resources_of(app).sessionmaker() as db:
        user = await db.scalar(select(User))
        assert user is not None
        password_hash = user.password
    trail = await events(app)
    assert {event.type for event in trail} >= {
        "user.registered",
        "login.succeeded",
        "login.failed",
        "token.reuse_detected",
        "profile.updated",
        "password.changed",
        "password.reset_requested",
    }
    secrets = [
        PASSWORD,
        NEW_PASSWORD,
        "Wrong-guess-123",
        password_hash,
        pair["access_token"],
        pair["refresh_token"],
        rotated["refresh_token"],
        fresh["access_token"],
        "Zebedee",
        "5550009999",
    ]
    for event in trail:
        text = json.dumps([event.type, event.ip, event.user_agent, event.request_id, event.details])
        for secret in secrets:
            assert secret not in text, (event.type, secret[:12])


# --- sessions --------------------------------------------------------------------------


async def test_the_session_list_marks_the_current_one_and_ending_one_is_immediate(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await add_user(app)
    laptop = await tokens(client, user_agent=FIREFOX)
    phone = await tokens(client, user_agent=CHROME)
    response = await client.get(SESSIONS, headers=bearer(laptop["access_token"]))
    assert response.status_code == 200
    items = response.json()["items"]
    assert [item["user_agent"] for item in items] == [CHROME, FIREFOX]  # newest first
    assert [item["current"] for item in items] == [False, True]
    assert set(items[0]) == {
        "id",
        "created_at",
        "last_used_at",
        "expires_at",
        "ip",
        "user_agent",
        "current",
    }
    assert items[0]["ip"] == "127.0.0.1"
    assert items[0]["last_used_at"] == items[0]["created_at"]

    # Ending the phone's session: its access token is refused on the next request, and
    # its refresh token too.
    response = await client.delete(
        f"{SESSIONS}/{items[0]['id']}", headers=bearer(laptop["access_token"])
    )
    assert response.status_code == 204
    response = await client.get("/api/v1/users/profile", headers=bearer(phone["access_token"]))
    assert response.status_code == 401
    response = await client.post(REFRESH, json={"refresh_token": phone["refresh_token"]})
    assert response.status_code == 401
    response = await client.get(SESSIONS, headers=bearer(laptop["access_token"]))
    assert [item["user_agent"] for item in response.json()["items"]] == [FIREFOX]
    ended = await the_event(app, "session.ended")
    assert ended.details == {"session_id": items[0]["id"]}

    # Ended already, unknown, malformed: 404.
    for session_id in (items[0]["id"], "00000000-0000-0000-0000-000000000000", "nope"):
        response = await client.delete(
            f"{SESSIONS}/{session_id}", headers=bearer(laptop["access_token"])
        )
        assert response.status_code == 404, session_id
        assert response.json()["code"] == "session_not_found"


async def test_another_users_session_is_not_found_and_stays_alive(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await add_user(app)
    await add_user(app, username="bob", email="bob@example.com")
    alice = await sign_in(app)
    bob = await sign_in(app, "bob")
    response = await client.get(SESSIONS, headers=bearer(bob["access_token"]))
    [bobs] = response.json()["items"]
    response = await client.delete(
        f"{SESSIONS}/{bobs['id']}", headers=bearer(alice["access_token"])
    )
    assert response.status_code == 404
    response = await client.get("/api/v1/users/profile", headers=bearer(bob["access_token"]))
    assert response.status_code == 200
    assert await events(app, "session.ended") == []


async def test_expired_sessions_are_not_listed(app: FastAPI, client: httpx.AsyncClient) -> None:
    await add_user(app)
    await sign_in(app)  # the older session, expired below
    current = await sign_in(app)
    async with resources_of(app).sessionmaker() as db, db.begin():
        first = await db.scalar(select(AuthSession).order_by(AuthSession.created_at))
        assert first is not None
        first.expires_at = utcnow() - timedelta(seconds=1)
    response = await client.get(SESSIONS, headers=bearer(current["access_token"]))
    assert len(response.json()["items"]) == 1
    assert response.json()["items"][0]["current"] is True


async def test_staff_see_sessions_and_superusers_end_them(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    root = await add_user(app, username="root", email="root@example.com", is_superuser=True)
    await add_user(app, username="staff", email="staff@example.com", is_staff=True)
    alice = await add_user(app)
    alice_tokens = await sign_in(app)
    staff = bearer((await sign_in(app, "staff"))["access_token"])
    superuser = bearer((await sign_in(app, "root"))["access_token"])
    mine = bearer(alice_tokens["access_token"])
    url = f"/api/v1/users/{alice['id']}/sessions"

    response = await client.get(url, headers=staff)
    assert response.status_code == 200
    [item] = response.json()["items"]
    assert item["current"] is False
    assert (await client.get(url, headers=mine)).status_code == 403
    assert (await client.get("/api/v1/users/999999/sessions", headers=staff)).status_code == 404

    assert (await client.delete(url, headers=staff)).status_code == 403
    assert (await client.delete(url, headers=mine)).status_code == 403
    assert (await client.get("/api/v1/users/profile", headers=mine)).status_code == 200
    assert (await client.delete(url, headers=superuser)).status_code == 204
    assert (await client.get("/api/v1/users/profile", headers=mine)).status_code == 401
    response = await client.post(REFRESH, json={"refresh_token": alice_tokens["refresh_token"]})
    assert response.status_code == 401
    event = await the_event(app, "sessions.ended_all")
    assert (event.user_id, event.actor_id) == (alice["id"], root["id"])
    assert (
        await client.delete("/api/v1/users/999999/sessions", headers=superuser)
    ).status_code == 404


# --- reading the trail -----------------------------------------------------------------


async def test_own_events_newest_first_in_keyset_pages(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await add_user(app)
    await add_user(app, username="bob", email="bob@example.com")
    for n in range(5):
        await login(client, password=f"wrong-{n}-guess")
    await login(client, username="bob", password="wrong-bob-guess")
    headers = bearer((await sign_in(app))["access_token"])

    response = await client.get(EVENTS, params={"limit": 2}, headers=headers)
    assert response.status_code == 200
    page = response.json()
    assert set(page["items"][0]) == {"id", "type", "at", "ip", "user_agent", "details"}
    seen = [item["id"] for item in page["items"]]
    while page["next_cursor"] is not None:
        page = (
            await client.get(
                EVENTS, params={"limit": 2, "cursor": page["next_cursor"]}, headers=headers
            )
        ).json()
        seen += [item["id"] for item in page["items"]]
    assert len(seen) == 5  # alice's five failures, not bob's
    assert seen == sorted(seen, reverse=True)

    for bad in ({"limit": 0}, {"limit": 201}, {"cursor": "abc"}, {"other": 1}):
        response = await client.get(EVENTS, params=bad, headers=headers)
        assert response.status_code == 422, bad


async def test_staff_search_the_trail_by_account_type_address_and_time(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await add_user(app, username="staff", email="staff@example.com", is_staff=True)
    alice = await add_user(app)
    await login(client, password="wrong-guess-one")
    await login(client, username="ghost", password="wrong-guess-two")
    await tokens(client)
    staff = bearer((await sign_in(app, "staff"))["access_token"])

    async def search(**params: Any) -> list[dict[str, Any]]:
        response = await client.get(STAFF_EVENTS, params=params, headers=staff)
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    failed = await search(type="login.failed")
    assert [item["user_id"] for item in failed] == [None, alice["id"]]
    assert {"user_id", "actor_id", "request_id"} <= set(failed[0])
    assert [item["type"] for item in await search(user_id=alice["id"])] == [
        "login.succeeded",
        "login.failed",
    ]
    assert len(await search(ip="127.0.0.1")) == 3
    assert len(await search(ip="::ffff:127.0.0.1")) == 3  # the same address
    assert await search(ip="10.0.0.1") == []
    later = (utcnow() + timedelta(minutes=1)).isoformat()
    assert await search(since=later) == []
    assert len(await search(until=later)) == 3

    for bad in ({"type": "login.maybe"}, {"ip": "not-an-ip"}, {"user_id": 0}, {"since": "x"}):
        response = await client.get(STAFF_EVENTS, params=bad, headers=staff)
        assert response.status_code == 422, bad
    mine = bearer((await sign_in(app))["access_token"])
    assert (await client.get(STAFF_EVENTS, headers=mine)).status_code == 403
    assert (await client.get(STAFF_EVENTS)).status_code == 401


# --- retention -------------------------------------------------------------------------


async def _age_events(app: FastAPI, days: int) -> None:
    async with resources_of(app).sessionmaker() as db, db.begin():
        await db.execute(update(AuditEvent).values(at=utcnow() - timedelta(days=days)))


async def test_the_purge_deletes_only_events_past_the_retention(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await add_user(app)
    for n in range(4):  # under the throttle's limit: four events
        await login(client, password=f"wrong-{n}-guess")
    await _age_events(app, 400)
    await login(client, password="wrong-fresh-guess")
    parts = resources_of(app)
    deleted = await audit.purge(parts.sessionmaker, timedelta(days=365), batch=3)
    assert deleted == 4  # in two batches
    assert len(await events(app)) == 1
    # The worker's hourly run does the same with AUDIT_RETENTION_DAYS.
    await _age_events(app, 366)
    assert await parts.housekeeper.run_once() == 1
    assert await events(app) == []


def test_purge_events_command(app_settings: Any, tmp_path: Any) -> None:
    """``python -m app purge-events`` on a migrated database (its own process)."""
    env = server_env(app_settings.database_url, AUDIT_RETENTION_DAYS="30")
    result = subprocess.run(
        [sys.executable, "-m", "app", "purge-events"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "purged" in result.stdout
    assert "30 days" in result.stdout


# --- notices ---------------------------------------------------------------------------


def test_a_notice_shows_a_user_agent_short_and_printable() -> None:
    from app.services.notices import _printable

    assert _printable("evil\r\n\r\nClick http://x\x00") == "evil Click http://x"
    assert len(_printable("A" * 300)) == 120


def test_a_browser_update_is_the_same_device_family() -> None:
    assert device_family(FIREFOX) == device_family(FIREFOX_NEXT)
    assert device_family(FIREFOX) != device_family(CHROME)
    assert device_family(None) == device_family("") == ""


async def test_a_sign_in_from_a_new_device_is_told_once(
    app: FastAPI, client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    await add_user(app)
    await tokens(client, user_agent=FIREFOX)  # the first sign-in ever: no notice
    await tokens(client, user_agent=FIREFOX_NEXT)  # the same browser, updated
    await eventually(lambda: outbox_settled(app), "the outbox delivered")
    assert smtp.received == []

    await tokens(client, user_agent=CHROME)
    [notice] = await smtp.wait_for(1)
    assert notice.rcpt_tos == ["alice@example.com"]
    assert "new device" in notice.message["Subject"]
    assert "Chrome/131" in notice.text
    assert CHROME[:100] in notice.text
    assert "127.0.0.1" in notice.text
    new = (await events(app, "login.succeeded"))[-1]
    assert new.details["new_device"] is True

    await tokens(client, user_agent=CHROME)  # known now
    await eventually(lambda: outbox_settled(app), "the outbox delivered")
    assert len(smtp.received) == 1


async def test_new_device_notices_can_be_turned_off(
    app: FastAPI, client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    parts = resources_of(app)
    quiet = parts.settings.model_copy(update={"notify_new_device": False})
    set_resources(app, dataclasses.replace(parts, settings=quiet))
    try:
        await add_user(app)
        await tokens(client, user_agent=FIREFOX)
        await tokens(client, user_agent=CHROME)
        await eventually(lambda: outbox_settled(app), "the outbox delivered")
        async with parts.sessionmaker() as db:
            kinds = (await db.scalars(select(OutboxEmail.kind))).all()
        assert MailKind.NEW_SIGN_IN not in kinds
        assert smtp.received == []
    finally:
        set_resources(app, parts)
