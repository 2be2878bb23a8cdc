"""Password reset (issue 12): the request answers alike for any address, the link arrives
through a real SMTP server (aiosmtpd), the token is single use, superseded, cancelled by a
password change, expires; a confirmation ends every auth session, clears the failed-login
count and sends a notice. Both backends; the race of two confirmations on PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import MutableMapping
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import ValidationError
from sqlalchemy import event, select, update

from app.core.config import Settings
from app.mail.messages import MailKind
from app.main import create_app
from app.models import OutboxEmail, PasswordResetToken
from app.models.base import utcnow
from app.resources import resources_of
from app.services.password_reset import describe, hash_token
from tests import mail_app
from tests.conftest import (
    PASSWORD,
    TEST_SECRET_KEY,
    add_user,
    asgi_client,
    bearer,
    set_columns,
    sign_in,
)
from tests.mail_app import outbox_settled, token_of
from tests.smtp_server import SmtpServer, eventually

pytest_plugins = ["tests.smtp_server"]

# The module's app sends through a real SMTP server (fixtures shared with the other
# mail modules).
module_smtp = mail_app.module_smtp
app_settings = mail_app.app_settings
smtp = mail_app.smtp
client = mail_app.settled_client

RESET = "/api/v1/auth/password-reset"
CONFIRM = "/api/v1/auth/password-reset/confirm"
NEW_PASSWORD = "another-Good-passphrase-42"
ALICE = "alice@example.com"


async def outbox_rows(app: FastAPI) -> list[OutboxEmail]:
    async with resources_of(app).sessionmaker() as db:
        return list((await db.scalars(select(OutboxEmail).order_by(OutboxEmail.id))).all())


async def token_rows(app: FastAPI) -> list[PasswordResetToken]:
    async with resources_of(app).sessionmaker() as db:
        return list((await db.scalars(select(PasswordResetToken))).all())


async def ask(client: httpx.AsyncClient, email: str = ALICE) -> httpx.Response:
    response = await client.post(RESET, json={"email": email})
    assert response.status_code == 202, response.text
    return response


async def reset_link(client: httpx.AsyncClient, smtp: SmtpServer, email: str = ALICE) -> str:
    """Ask for a reset and return the link of the email that arrives."""
    count = len(smtp.received)
    await ask(client, email)
    message = (await smtp.wait_for(count + 1))[count]
    assert message.rcpt_tos == [email]
    links = [word for word in message.text.split() if "token=" in word]
    assert len(links) == 1, message.text
    assert links[0] in message.html
    return links[0]


async def alice_token(app: FastAPI, client: httpx.AsyncClient, smtp: SmtpServer) -> str:
    """Alice's account and the token of the reset link she was sent."""
    await add_user(app)
    return token_of(await reset_link(client, smtp))


async def confirm(
    client: httpx.AsyncClient, token: str, password: str = NEW_PASSWORD
) -> httpx.Response:
    return await client.post(CONFIRM, json={"token": token, "new_password": password})


async def logs_in(client: httpx.AsyncClient, password: str, username: str = "alice") -> int:
    response = await client.post(
        "/api/v1/auth/token", json={"username": username, "password": password}
    )
    return response.status_code


async def test_the_link_arrives_and_sets_the_password(
    app: FastAPI, client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    await add_user(app)
    link = await reset_link(client, smtp)
    assert link.startswith("http://127.0.0.1:8000/account/reset-password?token=")
    token = token_of(link)
    assert len(token) >= 43  # 256 bits, base64url
    [message] = smtp.received
    assert "1 hour" in message.text
    assert "alice" in message.text

    rows = await token_rows(app)
    assert [row.token_hash for row in rows] == [hash_token(token)]  # only the hash is stored
    assert token not in repr(rows)

    response = await confirm(client, token)
    assert response.status_code == 204, response.text
    assert response.content == b""
    assert await logs_in(client, NEW_PASSWORD) == 200
    assert await logs_in(client, PASSWORD) == 401

    # The "password changed" notice, from the same transaction.
    notice = (await smtp.wait_for(2))[1]
    assert notice.rcpt_tos == [ALICE]
    assert "token=" not in notice.text
    await eventually(lambda: outbox_settled(app), "the outbox delivered")
    rows_sent = await outbox_rows(app)
    assert [row.kind for row in rows_sent] == [MailKind.PASSWORD_RESET, MailKind.PASSWORD_CHANGED]
    assert all(row.status == "sent" and row.secret is None for row in rows_sent)


async def test_known_and_unknown_addresses_get_the_same_answer(
    app: FastAPI, client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    await add_user(app)
    known = await ask(client, ALICE)
    unknown = await ask(client, "nobody@example.com")
    assert known.status_code == unknown.status_code == 202
    assert known.content == unknown.content
    assert known.json() == {"detail": known.json()["detail"]}

    def headers(response: httpx.Response) -> dict[str, str]:
        return {k: v for k, v in response.headers.items() if k.lower() != "x-request-id"}

    assert headers(known) == headers(unknown)
    await smtp.wait_for(1)
    await eventually(lambda: outbox_settled(app), "the outbox delivered")
    assert [row.recipient for row in await outbox_rows(app)] == [ALICE]
    assert len(smtp.received) == 1


async def test_both_paths_run_the_same_queries_up_to_the_send(
    app: FastAPI, client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    """Known and unknown: the same statements until the known path writes its token."""
    await add_user(app)
    engine = resources_of(app).engine.sync_engine
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement.split()[0].upper() + " " + statement.split()[-1])

    event.listen(engine, "before_cursor_execute", record)
    try:
        await ask(client, "nobody@example.com")
        unknown = list(statements)
        statements.clear()
        await ask(client, ALICE)
        known = list(statements)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert known[: len(unknown)] == unknown
    assert any("INSERT" in statement for statement in known[len(unknown) :])


async def test_the_answer_is_sent_before_the_account_is_looked_up(
    app: FastAPI, smtp: SmtpServer
) -> None:
    """The time of the answer cannot depend on the address: the 202 leaves before the
    first SQL statement runs (the lookup and the writes follow in a background task)."""
    await add_user(app)
    engine = resources_of(app).engine.sync_engine
    events: list[str] = []

    def record(*_args: Any) -> None:
        events.append("sql")

    async def app_recording_the_answer(scope: Any, receive: Any, send: Any) -> None:
        async def recording_send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body"):
                events.append("answer sent")
            await send(message)

        await app(scope, receive, recording_send)

    transport = httpx.ASGITransport(app=app_recording_the_answer)
    event.listen(engine, "before_cursor_execute", record)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            for email in (ALICE, "nobody@example.com"):
                events.clear()
                assert (await ask(client, email)).status_code == 202
                await resources_of(app).background.drain()
                assert events[0] == "answer sent", events
                assert "sql" in events
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert len(await token_rows(app)) == 1


async def test_a_failure_after_the_answer_is_logged_without_the_address(
    app: FastAPI, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    await add_user(app)
    engine = resources_of(app).engine.sync_engine

    def fail(*_args: Any) -> None:
        raise RuntimeError("the database went away")

    event.listen(engine, "before_cursor_execute", fail)
    try:
        with caplog.at_level(logging.ERROR):
            response = await ask(client, ALICE)
            await resources_of(app).background.drain()
    finally:
        event.remove(engine, "before_cursor_execute", fail)
    assert response.status_code == 202
    failures = [r.getMessage() for r in caplog.records if r.name == "app.background"]
    assert failures == ["background work failed: RuntimeError"]
    assert ALICE not in caplog.text
    assert await token_rows(app) == []


@pytest.mark.parametrize(
    "columns",
    [
        {"is_active": False},
        {"password": "!unusable-django-password"},
    ],
    ids=["inactive", "unusable-password"],
)
async def test_accounts_that_may_not_reset_get_nothing(
    app: FastAPI, client: httpx.AsyncClient, smtp: SmtpServer, columns: dict[str, Any]
) -> None:
    await add_user(app)
    await set_columns(app, **columns)
    await ask(client, ALICE)
    assert await outbox_rows(app) == []
    assert await token_rows(app) == []


async def test_an_imported_scrypt_account_gets_a_link(
    app: FastAPI, client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    await add_user(app)
    await set_columns(app, password="scrypt$16384$salt$8$1$aGFzaA==", imported=True)
    link = await reset_link(client, smtp)
    assert (await confirm(client, token_of(link))).status_code == 204
    assert await logs_in(client, NEW_PASSWORD) == 200


async def test_a_token_works_once(
    app: FastAPI, client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    token = await alice_token(app, client, smtp)
    assert (await confirm(client, token)).status_code == 204
    again = await confirm(client, token, "yet-another-Passphrase-9")
    assert again.status_code == 400
    assert again.json()["code"] == "invalid_token"
    assert "www-authenticate" not in again.headers
    assert await logs_in(client, NEW_PASSWORD) == 200


async def test_unknown_tokens_are_refused(app: FastAPI, client: httpx.AsyncClient) -> None:
    response = await confirm(client, "not-a-token")
    assert response.status_code == 400
    assert response.json() == {
        "detail": "The link is invalid or has expired; ask for a new one",
        "code": "invalid_token",
    }


async def test_a_newer_request_supersedes_the_link(
    app: FastAPI, client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    await add_user(app)
    first = token_of(await reset_link(client, smtp))
    second = token_of(await reset_link(client, smtp))
    assert first != second
    assert (await confirm(client, first)).json()["code"] == "invalid_token"
    assert (await confirm(client, second)).status_code == 204


async def test_a_profile_password_change_cancels_the_link_and_sends_a_notice(
    app: FastAPI, client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    token = await alice_token(app, client, smtp)
    access = (await sign_in(app))["access_token"]
    response = await client.post(
        "/api/v1/users/profile/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=bearer(access),
    )
    assert response.status_code == 204, response.text
    assert (await confirm(client, token, "yet-another-Passphrase-9")).status_code == 400
    assert await token_rows(app) == []
    notice = (await smtp.wait_for(2))[1]
    assert notice.rcpt_tos == [ALICE]
    assert notice.message["Subject"] != smtp.received[0].message["Subject"]


@pytest.mark.parametrize("by", ["profile", "admin"])
async def test_an_email_change_cancels_a_link_sent_to_the_old_address(
    app: FastAPI, client: httpx.AsyncClient, smtp: SmtpServer, by: str
) -> None:
    """Whoever reads the old mailbox must not take the account with a link sent there."""
    token = await alice_token(app, client, smtp)
    if by == "profile":
        response = await client.patch(
            "/api/v1/users/profile",
            json={"email": "alice.new@example.com", "current_password": PASSWORD},
            headers=bearer((await sign_in(app))["access_token"]),
        )
    else:
        await add_user(app, username="root", email="root@example.com", is_superuser=True)
        response = await client.patch(
            "/api/v1/users/1",
            json={"email": "alice.new@example.com"},
            headers=bearer((await sign_in(app, "root"))["access_token"]),
        )
    assert response.status_code == 200, response.text
    assert (await confirm(client, token)).json()["code"] == "invalid_token"
    assert await token_rows(app) == []
    assert await logs_in(client, PASSWORD, "alice.new@example.com") == 200


async def test_an_expired_token_is_refused(
    app: FastAPI, client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    token = await alice_token(app, client, smtp)
    [row] = await token_rows(app)
    assert row.expires_at - row.created_at == timedelta(hours=1)
    async with resources_of(app).sessionmaker() as db, db.begin():
        await db.execute(
            update(PasswordResetToken).values(expires_at=utcnow() - timedelta(seconds=1))
        )
    assert (await confirm(client, token)).json()["code"] == "invalid_token"
    assert await logs_in(client, PASSWORD) == 200


async def test_every_auth_session_ends(
    app: FastAPI, client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    await add_user(app)
    tokens = await sign_in(app)
    profile = await client.get("/api/v1/users/profile", headers=bearer(tokens["access_token"]))
    assert profile.status_code == 200
    token = token_of(await reset_link(client, smtp))
    assert (await confirm(client, token)).status_code == 204
    profile = await client.get("/api/v1/users/profile", headers=bearer(tokens["access_token"]))
    assert profile.status_code == 401
    refreshed = await client.post(
        "/api/v1/auth/token/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert refreshed.status_code == 401


async def test_the_failed_login_count_is_cleared(
    app: FastAPI, client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    await add_user(app)
    statuses = [await logs_in(client, "wrong-password") for _ in range(6)]
    assert statuses[-1] == 429  # LOGIN_LIMIT_PER_ACCOUNT: 5 per 15 minutes
    token = token_of(await reset_link(client, smtp))
    assert (await confirm(client, token)).status_code == 204
    assert await logs_in(client, NEW_PASSWORD) == 200


async def test_a_weak_password_is_refused_and_the_token_stays_usable(
    app: FastAPI, client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    token = await alice_token(app, client, smtp)
    for weak in ("12345678", "alice", "password"):
        response = await confirm(client, token, weak)
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["loc"] == ["body", "new_password"]
        assert f'"{weak}"' not in response.text  # never echoed
    assert (await confirm(client, token)).status_code == 204


@pytest.mark.parametrize(
    "body",
    [
        {"email": "not-an-email"},
        {"email": ""},
        {},
        {"email": ALICE, "extra": 1},
    ],
)
async def test_a_malformed_request_is_422(
    app: FastAPI, client: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    response = await client.post(RESET, json=body)
    assert response.status_code == 422, response.text


@pytest.mark.parametrize(
    "body",
    [
        {"token": "", "new_password": NEW_PASSWORD},
        {"token": "x" * 257, "new_password": NEW_PASSWORD},
        {"token": "abc"},
        {"token": "abc", "new_password": NEW_PASSWORD, "extra": 1},
    ],
)
async def test_a_malformed_confirmation_is_422(
    app: FastAPI, client: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    response = await client.post(CONFIRM, json=body)
    assert response.status_code == 422, response.text


async def test_requests_per_email_are_limited_silently(
    app: FastAPI, client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    """PASSWORD_RESET_LIMIT_PER_EMAIL (5/hour): at least 3 in 15 minutes get a link; past
    the limit the answer is the same 202 and nothing is sent; unknown emails count too."""
    await add_user(app)
    first = await ask(client)
    for _ in range(4):
        await ask(client)
    over = await ask(client)
    assert over.content == first.content
    await smtp.wait_for(5)
    await eventually(lambda: outbox_settled(app), "the outbox delivered")
    assert len(await outbox_rows(app)) == 5
    assert len(smtp.received) == 5
    limiter = resources_of(app).throttle
    for _ in range(5):
        await ask(client, "nobody@example.com")
    assert not await limiter.password_reset_attempt("nobody@example.com", "10.0.0.9")


async def test_requests_per_client_address_are_limited(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """PASSWORD_RESET_LIMIT_PER_ADDRESS (20/hour): then 429 with Retry-After, another
    address is unaffected."""
    for number in range(20):
        await ask(client, f"user{number}@example.com")
    refused = await client.post(RESET, json={"email": "user99@example.com"})
    assert refused.status_code == 429
    assert refused.json()["code"] == "too_many_requests"
    assert int(refused.headers["Retry-After"]) > 0
    async with asgi_client(app, client_ip="192.0.2.7") as other:
        await ask(other, "user99@example.com")


async def test_no_token_in_the_logs(
    app: FastAPI, client: httpx.AsyncClient, smtp: SmtpServer, caplog: pytest.LogCaptureFixture
) -> None:
    """At the service's level (INFO; its own loggers at DEBUG): neither the token nor its
    hash, nor the link (drivers' DEBUG lines, which echo SQL parameters, are not the
    service's log)."""
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="app")
    await add_user(app)
    link = await reset_link(client, smtp)
    token = token_of(link)
    await confirm(client, token, "12345678")
    await confirm(client, token)
    await confirm(client, token)
    await eventually(lambda: outbox_settled(app), "the outbox delivered")
    logged = [record.getMessage() for record in caplog.records if record.name != "mail.log"]
    assert logged
    assert not [line for line in logged if token in line or hash_token(token) in line]


async def test_two_concurrent_confirmations_one_wins(
    app: FastAPI, smtp: SmtpServer, database_url: str
) -> None:
    await add_user(app)
    async with asgi_client(app) as client:
        token = token_of(await reset_link(client, smtp))
        first, second = await asyncio.gather(
            confirm(client, token, NEW_PASSWORD), confirm(client, token, "second-Passphrase-77")
        )
    assert sorted([first.status_code, second.status_code]) == [204, 400]
    winner = NEW_PASSWORD if first.status_code == 204 else "second-Passphrase-77"
    async with asgi_client(app) as client:
        assert await logs_in(client, winner) == 200


def test_link_settings() -> None:
    settings = Settings(
        _env_file=None,
        secret_key=TEST_SECRET_KEY,
        public_url="https://id.example.com/",
        password_reset_ttl="1800",
    )
    assert settings.password_reset_link("T") == (
        "https://id.example.com/account/reset-password?token=T"
    )
    assert settings.password_reset_ttl == timedelta(minutes=30)
    custom = Settings(
        _env_file=None,
        secret_key=TEST_SECRET_KEY,
        password_reset_url="https://app.example.com/reset#{token}",
    )
    assert custom.password_reset_link("T") == "https://app.example.com/reset#T"
    for bad in ("https://app.example.com/reset", "ftp://x/{token}", "{other}/{token}"):
        with pytest.raises(ValidationError, match="PASSWORD_RESET_URL"):
            Settings(_env_file=None, secret_key=TEST_SECRET_KEY, password_reset_url=bad)
    for ttl in ("29", "86401"):
        with pytest.raises(ValidationError, match="PASSWORD_RESET_TTL"):
            Settings(_env_file=None, secret_key=TEST_SECRET_KEY, password_reset_ttl=ttl)
    for limit in ("password_reset_limit_per_address", "password_reset_limit_per_email"):
        values: dict[str, Any] = {limit: "often"}
        with pytest.raises(ValidationError, match="rate limit"):
            Settings(_env_file=None, secret_key=TEST_SECRET_KEY, **values)


def test_valid_for_is_readable() -> None:
    assert describe(timedelta(hours=1)) == "1 hour"
    assert describe(timedelta(minutes=30)) == "30 minutes"
    assert describe(timedelta(days=1)) == "1 day"
    assert describe(timedelta(seconds=90)) == "90 seconds"


def test_openapi_documents_the_answers() -> None:
    schema = create_app(Settings(_env_file=None, secret_key=TEST_SECRET_KEY)).openapi()
    request = schema["paths"][RESET]["post"]["responses"]
    confirmation = schema["paths"][CONFIRM]["post"]["responses"]
    assert {"202", "422", "429"} <= request.keys()
    assert {"204", "400", "422", "429"} <= confirmation.keys()
    ref = confirmation["400"]["content"]["application/json"]["schema"]["$ref"]
    codes = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]["properties"]["code"]
    assert "invalid_token" in codes["enum"]
