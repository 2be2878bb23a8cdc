"""Email verification (issue 12): registration mails a link through a real SMTP server
(aiosmtpd) and the link verifies once, until it expires, and only while the account keeps
the address it went to; resend answers alike; an email change unverifies the new address
and tells the old one; admins, createsuperuser and the Django import may vouch for an
address; REQUIRE_VERIFIED_EMAIL turns the right password of an unverified account into a
403. Both backends."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import ValidationError
from sqlalchemy import select, update

from app.core.config import Settings
from app.main import create_app
from app.models import EmailVerificationToken, OutboxEmail, User
from app.models.base import utcnow
from app.resources import resources_of
from app.services.password_reset import hash_token
from tests import mail_app
from tests.conftest import (
    PASSWORD,
    TEST_SECRET_KEY,
    access_token,
    add_user,
    asgi_client,
    bearer,
    running_app,
    set_columns,
    user_payload,
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

REGISTER = "/api/v1/auth/register"
VERIFY = "/api/v1/auth/verify-email"
RESEND = "/api/v1/auth/verify-email/resend"
EMAIL_STATUS = "/api/v1/users/profile/email"
PROFILE = "/api/v1/users/profile"
TOKEN = "/api/v1/auth/token"
ALICE = "alice@example.com"


def link_in(text: str) -> str:
    links = [word for word in text.split() if "token=" in word]
    assert len(links) == 1, text
    return links[0]


async def register(client: httpx.AsyncClient, smtp: SmtpServer, **overrides: str) -> str:
    """Register (alice unless overridden) and return the token of the link that arrives."""
    count = len(smtp.received)
    response = await client.post(REGISTER, json=user_payload(**overrides))
    assert response.status_code == 201, response.text
    message = (await smtp.wait_for(count + 1))[count]
    assert message.rcpt_tos == [overrides.get("email", ALICE)]
    link = link_in(message.text)
    assert link in message.html
    return token_of(link)


async def verified_at(app: FastAPI, username: str = "alice") -> object:
    async with resources_of(app).sessionmaker() as db:
        return await db.scalar(select(User.email_verified_at).where(User.username == username))


async def email_status(
    app: FastAPI, client: httpx.AsyncClient, username: str = "alice"
) -> dict[str, Any]:
    response = await client.get(EMAIL_STATUS, headers=bearer(await access_token(app, username)))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_registration_link_verifies_once(
    app: FastAPI, client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    token = await register(client, smtp)
    [message] = smtp.received
    assert "1 day" in message.text
    assert "alice" in message.text
    assert len(token) >= 43
    assert await email_status(app, client) == {
        "email": ALICE,
        "verified": False,
        "verified_at": None,
    }
    assert (await client.post(VERIFY, json={"token": token})).status_code == 204
    status = await email_status(app, client)
    assert status["verified"] is True
    assert status["verified_at"] is not None
    again = await client.post(VERIFY, json={"token": token})
    assert (again.status_code, again.json()["code"]) == (400, "invalid_token")
    # The profile keeps its twelve fields.
    profile = await client.get(PROFILE, headers=bearer(await access_token(app)))
    assert len(profile.json()) == 12
    assert "email_verified" not in profile.json()


async def test_unknown_and_expired_tokens_are_400(
    app: FastAPI, client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    unknown = await client.post(VERIFY, json={"token": "x" * 43})
    assert (unknown.status_code, unknown.json()["code"]) == (400, "invalid_token")
    token = await register(client, smtp)
    async with resources_of(app).sessionmaker() as db, db.begin():
        await db.execute(
            update(EmailVerificationToken).values(expires_at=utcnow() - timedelta(seconds=1))
        )
    expired = await client.post(VERIFY, json={"token": token})
    assert (expired.status_code, expired.json()["code"]) == (400, "invalid_token")
    assert await verified_at(app) is None
    missing = await client.post(VERIFY, json={})
    assert missing.status_code == 422


async def test_only_the_hash_is_stored(
    app: FastAPI, client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    token = await register(client, smtp)
    async with resources_of(app).sessionmaker() as db:
        [row] = (await db.scalars(select(EmailVerificationToken))).all()
    assert row.token_hash == hash_token(token)
    assert row.email == ALICE
    await eventually(lambda: outbox_settled(app), "the outbox delivered")
    async with resources_of(app).sessionmaker() as db:
        secrets = (await db.scalars(select(OutboxEmail.secret))).all()
    assert all(not secret for secret in secrets)  # erased once sent


async def test_the_token_is_bound_to_the_address(
    app: FastAPI, client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    old_token = await register(client, smtp)
    headers = bearer(await access_token(app))
    changed = await client.patch(
        PROFILE,
        headers=headers,
        json={"email": "alice2@example.com", "current_password": PASSWORD},
    )
    assert changed.status_code == 200, changed.text
    messages = await smtp.wait_for(3)
    by_recipient = {message.rcpt_tos[0]: message for message in messages[1:]}
    assert set(by_recipient) == {ALICE, "alice2@example.com"}
    notice = by_recipient[ALICE]
    assert "alice2@example.com" in notice.text
    assert "token=" not in notice.text
    new_token = token_of(link_in(by_recipient["alice2@example.com"].text))
    stale = await client.post(VERIFY, json={"token": old_token})
    assert (stale.status_code, stale.json()["code"]) == (400, "invalid_token")
    assert (await client.post(VERIFY, json={"token": new_token})).status_code == 204
    assert (await email_status(app, client))["email"] == "alice2@example.com"
    assert (await email_status(app, client))["verified"] is True
    # A later change unverifies again.
    again = await client.patch(
        PROFILE,
        headers=headers,
        json={"email": "alice3@example.com", "current_password": PASSWORD},
    )
    assert again.status_code == 200
    assert (await email_status(app, client))["verified"] is False


async def test_a_token_whose_address_was_changed_back_is_stale(
    app: FastAPI, client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    """The row holds the address; a token for another one (the address moved under it)
    verifies nothing, even if it was never replaced."""
    token = await register(client, smtp)
    await set_columns(app, email="elsewhere@example.com")
    stale = await client.post(VERIFY, json={"token": token})
    assert (stale.status_code, stale.json()["code"]) == (400, "invalid_token")
    await set_columns(app, email=ALICE)
    assert (await client.post(VERIFY, json={"token": token})).status_code == 204


async def test_profile_patch_refuses_email_verified(
    app: FastAPI, client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    await add_user(app)
    response = await client.patch(
        PROFILE, headers=bearer(await access_token(app)), json={"email_verified": True}
    )
    assert response.status_code == 422
    assert await verified_at(app) is None


async def test_resend_answers_alike_and_mails_only_unverified_active_accounts(
    app: FastAPI, client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    await add_user(app)
    await add_user(app, username="bob", email="bob@example.com")
    await set_columns(app, "bob", email_verified_at=utcnow())
    await add_user(app, username="carol", email="carol@example.com", is_active=False)
    answers = [
        await client.post(RESEND, json={"email": email})
        for email in ("nobody@example.com", "bob@example.com", "carol@example.com", ALICE)
    ]
    assert {response.status_code for response in answers} == {202}
    assert len({response.text for response in answers}) == 1
    [message] = await smtp.wait_for(1)
    await eventually(lambda: outbox_settled(app), "the outbox delivered")
    assert len(smtp.received) == 1
    assert message.rcpt_tos == [ALICE]
    first = token_of(link_in(message.text))
    await client.post(RESEND, json={"email": ALICE})
    second = token_of(link_in((await smtp.wait_for(2))[1].text))
    superseded = await client.post(VERIFY, json={"token": first})
    assert superseded.status_code == 400
    assert (await client.post(VERIFY, json={"token": second})).status_code == 204
    bad = await client.post(RESEND, json={"email": "not an address"})
    assert bad.status_code == 422


async def test_resend_is_throttled(app: FastAPI, settings: Settings, smtp: SmtpServer) -> None:
    limited = settings.model_copy(
        update={
            "email_verify_limit_per_address": "2/hour",
            "email_verify_limit_per_email": "1/hour",
        }
    )
    async with running_app(limited) as own:
        await add_user(own)
        async with asgi_client(own, client_ip="192.0.2.9") as client:
            first = await client.post(RESEND, json={"email": ALICE})
            second = await client.post(RESEND, json={"email": ALICE})  # over per email: 202
            assert (first.status_code, second.status_code) == (202, 202)
            refused = await client.post(RESEND, json={"email": ALICE})
            assert refused.status_code == 429
            assert int(refused.headers["Retry-After"]) > 0
        await resources_of(own).background.drain()
        async with resources_of(own).sessionmaker() as db:
            rows = (await db.scalars(select(OutboxEmail.recipient))).all()
        assert list(rows) == [ALICE]


async def test_admin_sets_email_verified_and_changes_the_email(
    app: FastAPI, client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    await add_user(app, username="root", email="root@example.com", is_superuser=True)
    user = await add_user(app)
    headers = bearer(await access_token(app, "root"))
    url = f"/api/v1/users/{user['id']}"
    response = await client.patch(url, headers=headers, json={"email_verified": True})
    assert response.status_code == 200, response.text
    assert "email_verified" not in response.json()
    assert await verified_at(app) is not None
    assert (
        await client.patch(url, headers=headers, json={"email_verified": None})
    ).status_code == 422
    changed = await client.patch(url, headers=headers, json={"email": "new@example.com"})
    assert changed.status_code == 200
    assert await verified_at(app) is None
    messages = await smtp.wait_for(2)
    assert sorted(message.rcpt_tos[0] for message in messages) == [ALICE, "new@example.com"]
    vouched = await client.patch(
        url, headers=headers, json={"email": "newer@example.com", "email_verified": True}
    )
    assert vouched.status_code == 200
    assert await verified_at(app) is not None
    await eventually(lambda: outbox_settled(app), "the outbox delivered")
    assert [m.rcpt_tos[0] for m in smtp.received[2:]] == ["new@example.com"]  # notice only
    assert (
        await client.patch(url, headers=headers, json={"email_verified": False})
    ).status_code == 200
    assert await verified_at(app) is None
    # Not for staff who are not superusers.
    await add_user(app, username="staff", email="staff@example.com", is_staff=True)
    refused = await client.patch(
        url, headers=bearer(await access_token(app, "staff")), json={"email_verified": True}
    )
    assert refused.status_code == 403


async def test_createsuperuser_is_verified(app: FastAPI) -> None:
    from app.cli import _create_superuser

    await _create_superuser(resources_of(app).settings, "root", "root@example.org", PASSWORD)
    assert await verified_at(app, "root") is not None


async def test_require_verified_email(settings: Settings, smtp: SmtpServer) -> None:
    async with running_app(settings.model_copy(update={"require_verified_email": True})) as own:
        await add_user(own)
        async with asgi_client(own) as client:
            wrong = await client.post(TOKEN, json={"username": "alice", "password": "nope-nope"})
            assert (wrong.status_code, wrong.json()["code"]) == (401, "invalid_credentials")
            right = await client.post(TOKEN, json={"username": "alice", "password": PASSWORD})
            assert (right.status_code, right.json()["code"]) == (403, "email_not_verified")
            await set_columns(own, email_verified_at=utcnow())
            ok = await client.post(TOKEN, json={"username": "alice", "password": PASSWORD})
            assert ok.status_code == 200


async def test_unverified_accounts_log_in_by_default(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await add_user(app)
    ok = await client.post(TOKEN, json={"username": "alice", "password": PASSWORD})
    assert ok.status_code == 200


def test_settings_are_validated() -> None:
    base = {"_env_file": None, "secret_key": TEST_SECRET_KEY}
    settings = Settings(**base)  # type: ignore[arg-type]
    assert settings.email_verify_ttl == timedelta(days=1)
    assert settings.require_verified_email is False
    assert settings.email_verify_link("abc") == (
        "http://127.0.0.1:8000/account/verify-email?token=abc"
    )
    custom = Settings(**base, email_verify_url="https://app.example/verify/{token}")  # type: ignore[arg-type]
    assert custom.email_verify_link("abc") == "https://app.example/verify/abc"
    for bad in ({"email_verify_url": "https://x/no-token"}, {"email_verify_ttl": "10"}):
        with pytest.raises(ValidationError, match="EMAIL_VERIFY"):
            Settings(**base, **bad)  # type: ignore[arg-type]
    assert create_app(settings).openapi()["paths"][VERIFY]["post"]["responses"]["400"]


async def test_no_token_in_the_logs(
    app: FastAPI, client: httpx.AsyncClient, smtp: SmtpServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="app")
    token = await register(client, smtp)
    await client.post(VERIFY, json={"token": token})
    await client.post(VERIFY, json={"token": token})
    await eventually(lambda: outbox_settled(app), "the outbox delivered")
    logged = [record.getMessage() for record in caplog.records if record.name != "mail.log"]
    assert logged
    assert not [line for line in logged if token in line or hash_token(token) in line]


async def test_a_deactivated_account_verifies_nothing(
    app: FastAPI, client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    token = await register(client, smtp)
    await set_columns(app, is_active=False)
    refused = await client.post(VERIFY, json={"token": token})
    assert (refused.status_code, refused.json()["code"]) == (400, "invalid_token")
    assert await verified_at(app) is None


async def test_a_failed_registration_sends_nothing(
    app: FastAPI, client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    await add_user(app)
    taken = await client.post(REGISTER, json=user_payload(username="other"))
    assert taken.status_code == 409
    async with resources_of(app).sessionmaker() as db:
        assert not (await db.scalars(select(OutboxEmail))).all()
        assert not (await db.scalars(select(EmailVerificationToken))).all()
