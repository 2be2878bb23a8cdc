"""Two-factor sign-in (issue 14): RFC 6238 codes computed for real (the RFC's vectors check
the algorithm; the flows use the real clock), enrolment, sign-in with a code and with a
recovery code, replay, the mfa_token's life and its 5-try limit, regeneration, disabling,
a superuser's reset, events and notices through a real SMTP server, secrets sealed at
rest. Both backends."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
from fastapi import FastAPI
from jose import jwt
from pydantic import SecretStr
from sqlalchemy import select, update

from app.core import totp
from app.core.config import Settings
from app.core.encryption import DataCipher, DataKeys, UndecryptableValue, new_key, parse_key
from app.main import create_app
from app.models import AuditEvent, MfaChallenge, RecoveryCode, TotpCredential
from app.models.base import utcnow
from app.repositories import password_reset as reset_repo
from app.resources import resources_of, set_resources
from app.services.password_reset import hash_token
from tests.conftest import (
    PASSWORD,
    TEST_SECRET_KEY,
    add_user,
    bearer,
    server_env,
    sign_in,
)
from tests.mail_app import outbox_settled
from tests.smtp_server import SmtpServer, eventually, mail_settings, smtp_server_running

pytest_plugins = ["tests.smtp_server"]

DATA_KEY = new_key()
LOGIN = "/api/v1/auth/token"
SECOND_STEP = "/api/v1/auth/token/mfa"
MFA = "/api/v1/users/profile/mfa"
NEW_PASSWORD = "another-Good-passphrase-42"


@pytest.fixture(scope="module")
def module_smtp() -> Iterator[SmtpServer]:
    with smtp_server_running() as server:
        yield server


@pytest.fixture(scope="module")
def app_settings(
    database_url: str, tmp_path_factory: pytest.TempPathFactory, module_smtp: SmtpServer
) -> Settings:
    directory = tmp_path_factory.mktemp("app")
    base = Settings(
        _env_file=None,
        database_url=database_url,
        secret_key=TEST_SECRET_KEY,
        secret_key_file=directory / "unused-key",
        media_root=directory / "media",
        data_encryption_key=DATA_KEY,
    )
    return mail_settings(base, smtp_port=module_smtp.port)


@pytest.fixture
async def smtp(app: FastAPI, module_smtp: SmtpServer) -> SmtpServer:
    await eventually(lambda: outbox_settled(app), "the outbox delivered")
    module_smtp.received.clear()
    return module_smtp


def code_now(secret: str, offset: int = 0) -> str:
    raw = base64.b32decode(secret + "=" * (-len(secret) % 8))
    return totp.code_at(raw, totp.step_at(time.time()) + offset)


async def login(client: httpx.AsyncClient, password: str = PASSWORD) -> httpx.Response:
    return await client.post(LOGIN, json={"username": "alice", "password": password})


async def events(app: FastAPI) -> list[AuditEvent]:
    async with resources_of(app).sessionmaker() as db:
        return list((await db.scalars(select(AuditEvent).order_by(AuditEvent.id))).all())


async def enrolled(app: FastAPI, client: httpx.AsyncClient) -> tuple[str, list[str]]:
    """Alice with TOTP on: her secret (base32) and recovery codes."""
    await add_user(app)
    headers = bearer((await sign_in(app))["access_token"])
    response = await client.post(
        f"{MFA}/totp", json={"current_password": PASSWORD}, headers=headers
    )
    assert response.status_code == 200, response.text
    secret = response.json()["secret"]
    response = await client.post(
        f"{MFA}/totp/confirm", json={"code": code_now(secret)}, headers=headers
    )
    assert response.status_code == 200, response.text
    return secret, response.json()["recovery_codes"]


async def mfa_token(client: httpx.AsyncClient) -> str:
    response = await login(client)
    assert response.status_code == 403, response.text
    body = response.json()
    assert body["code"] == "mfa_required"
    token: str = body["mfa_token"]
    return token


# --- the algorithm ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("unix_time", "expected"),
    [
        (59, "94287082"),
        (1111111109, "07081804"),
        (1111111111, "14050471"),
        (1234567890, "89005924"),
        (2000000000, "69279037"),
        (20000000000, "65353130"),
    ],
)
def test_rfc_6238_sha1_vectors(unix_time: int, expected: str) -> None:
    secret = b"12345678901234567890"
    assert totp.code_at(secret, totp.step_at(unix_time), digits=8) == expected
    assert totp.code_at(secret, totp.step_at(unix_time)) == expected[-6:]


def test_a_code_is_accepted_one_step_either_side_and_never_for_a_used_step() -> None:
    secret = totp.new_secret()
    assert len(secret) * 8 == 160
    now = 1_700_000_000.0
    step = totp.step_at(now)
    for offset in (-1, 0, 1):
        code = totp.code_at(secret, step + offset)
        assert totp.matching_step(secret, code, now, after=None) == step + offset
    assert totp.matching_step(secret, totp.code_at(secret, step + 2), now, after=None) is None
    assert totp.matching_step(secret, totp.code_at(secret, step), now, after=step) is None


def test_sealed_secrets_open_only_with_their_key_and_row() -> None:
    key, other = parse_key(new_key()), parse_key(new_key())
    sealed = DataCipher(key).seal(b"secret", "mfa_totp:1")
    assert b"secret" not in sealed.encode()
    assert DataCipher(key).open(sealed, "mfa_totp:1") == b"secret"
    assert DataCipher(other, [key]).open(sealed, "mfa_totp:1") == b"secret"  # rotation
    for cipher, context in ((DataCipher(other), "mfa_totp:1"), (DataCipher(key), "mfa_totp:2")):
        with pytest.raises(UndecryptableValue):
            cipher.open(sealed, context)


# --- enrolment -------------------------------------------------------------------------


async def test_enrol_then_confirm_turns_it_on_with_recovery_codes(
    app: FastAPI, client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    await add_user(app)
    headers = bearer((await sign_in(app))["access_token"])
    assert (await client.get(MFA, headers=headers)).json() == {
        "totp": False,
        "recovery_codes_left": 0,
    }
    wrong = await client.post(
        f"{MFA}/totp", json={"current_password": "nope-nope"}, headers=headers
    )
    assert wrong.status_code == 403
    first = (
        await client.post(f"{MFA}/totp", json={"current_password": PASSWORD}, headers=headers)
    ).json()
    response = await client.post(
        f"{MFA}/totp", json={"current_password": PASSWORD}, headers=headers
    )
    enrolment = response.json()
    assert enrolment["secret"] != first["secret"]  # posting again replaces a pending secret
    assert len(base64.b32decode(enrolment["secret"])) == 20
    uri = enrolment["otpauth_uri"]
    assert uri.startswith("otpauth://totp/userservice:alice?")
    assert f"secret={enrolment['secret']}" in uri
    assert "issuer=userservice" in uri

    # Pending: sign-in is unchanged.
    assert (await login(client)).status_code == 200
    # The replaced secret's code is no good; a wrong code neither.
    for code in (code_now(first["secret"]), "000000"):
        response = await client.post(f"{MFA}/totp/confirm", json={"code": code}, headers=headers)
        if code == "000000" and code == code_now(enrolment["secret"]):
            continue  # one chance in a million
        assert response.status_code == 400, code
        assert response.json()["code"] == "invalid_code"

    response = await client.post(
        f"{MFA}/totp/confirm", json={"code": code_now(enrolment["secret"])}, headers=headers
    )
    assert response.status_code == 200
    codes = response.json()["recovery_codes"]
    assert len(codes) == len(set(codes)) == 10
    assert all(len(code.replace("-", "")) * 5 >= 50 for code in codes)
    assert (await client.get(MFA, headers=headers)).json() == {
        "totp": True,
        "recovery_codes_left": 10,
    }
    again = await client.post(f"{MFA}/totp", json={"current_password": PASSWORD}, headers=headers)
    assert (again.status_code, again.json()["code"]) == (409, "mfa_already_enabled")
    again = await client.post(f"{MFA}/totp/confirm", json={"code": "123456"}, headers=headers)
    assert (again.status_code, again.json()["code"]) == (409, "mfa_not_pending")

    # At rest: the secret is sealed, the codes are hashes.
    async with resources_of(app).sessionmaker() as db:
        credential = await db.scalar(select(TotpCredential))
        stored_codes = (await db.scalars(select(RecoveryCode.code_hash))).all()
    assert credential is not None
    assert enrolment["secret"] not in credential.secret
    assert credential.secret.startswith("v1.")
    assert not set(codes) & set(stored_codes)
    assert [event.type for event in await events(app)][-1] == "mfa.enabled"
    [notice] = await smtp.wait_for(1)
    assert "turned on" in notice.text


# --- sign-in ---------------------------------------------------------------------------


async def test_sign_in_asks_for_the_code_and_marks_the_tokens(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    secret, _codes = await enrolled(app, client)
    wrong = await login(client, "wrong-password-1")
    assert wrong.status_code == 401  # a wrong password says nothing of the second factor
    assert "mfa_token" not in wrong.json()

    token = await mfa_token(client)
    response = await client.post(
        SECOND_STEP, json={"mfa_token": token, "code": code_now(secret, 1)}
    )
    assert response.status_code == 200, response.text
    pair = response.json()
    claims = jwt.get_unverified_claims(pair["access_token"])
    assert claims["amr"] == ["pwd", "otp"]
    profile = await client.get("/api/v1/users/profile", headers=bearer(pair["access_token"]))
    assert profile.status_code == 200
    refreshed = await client.post(
        "/api/v1/auth/token/refresh", json={"refresh_token": pair["refresh_token"]}
    )
    assert jwt.get_unverified_claims(refreshed.json()["access_token"])["amr"] == ["pwd", "otp"]
    # The token worked once.
    again = await client.post(SECOND_STEP, json={"mfa_token": token, "code": code_now(secret)})
    assert (again.status_code, again.json()["code"]) == (401, "invalid_mfa_token")
    succeeded = [event for event in await events(app) if event.type == "login.succeeded"]
    assert succeeded[-1].details["second_factor"] == "otp"


async def test_a_code_is_never_accepted_twice(app: FastAPI, client: httpx.AsyncClient) -> None:
    secret, _codes = await enrolled(app, client)
    code = code_now(secret, 1)
    first = await client.post(
        SECOND_STEP, json={"mfa_token": await mfa_token(client), "code": code}
    )
    assert first.status_code == 200
    replay = await client.post(
        SECOND_STEP, json={"mfa_token": await mfa_token(client), "code": code}
    )
    assert (replay.status_code, replay.json()["code"]) == (400, "invalid_code")
    # An earlier step than the last one used is refused too (the confirm used step 0).
    earlier = code_now(secret, -1)
    older = await client.post(
        SECOND_STEP, json={"mfa_token": await mfa_token(client), "code": earlier}
    )
    assert older.status_code == 400


async def test_a_recovery_code_signs_in_once_and_is_told(
    app: FastAPI, client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    _secret, codes = await enrolled(app, client)
    await smtp.wait_for(1)  # "turned on"
    response = await client.post(
        SECOND_STEP, json={"mfa_token": await mfa_token(client), "recovery_code": codes[3].upper()}
    )
    assert response.status_code == 200, response.text
    assert jwt.get_unverified_claims(response.json()["access_token"])["amr"] == ["pwd", "otp"]
    again = await client.post(
        SECOND_STEP, json={"mfa_token": await mfa_token(client), "recovery_code": codes[3]}
    )
    assert again.status_code == 400
    used = [event for event in await events(app) if event.type == "mfa.recovery_code_used"]
    assert [event.details for event in used] == [{"codes_left": 9}]
    notice = (await smtp.wait_for(2))[1]
    assert "recovery code" in notice.text
    assert "9 are left" in notice.text
    assert codes[3] not in notice.text


async def test_the_mfa_token_dies_after_five_wrong_codes(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    secret, _codes = await enrolled(app, client)
    token = await mfa_token(client)
    right = code_now(secret, 1)
    wrong = "000000" if right != "000000" else "111111"
    for _ in range(5):
        response = await client.post(SECOND_STEP, json={"mfa_token": token, "code": wrong})
        assert (response.status_code, response.json()["code"]) == (400, "invalid_code")
    response = await client.post(SECOND_STEP, json={"mfa_token": token, "code": right})
    assert (response.status_code, response.json()["code"]) == (401, "invalid_mfa_token")
    failed = [event for event in await events(app) if event.type == "mfa.failed"]
    assert [(event.actor_id, event.details) for event in failed] == [
        (None, {"during": "sign_in"})
    ] * 5
    # The wrong codes counted in the account's failed-attempt throttle: a new token, the
    # right code, and still 429 until the window passes.
    response = await client.post(
        SECOND_STEP, json={"mfa_token": await mfa_token(client), "code": right}
    )
    assert response.status_code == 429


async def test_the_mfa_token_expires(app: FastAPI, client: httpx.AsyncClient) -> None:
    secret, _codes = await enrolled(app, client)
    token = await mfa_token(client)
    async with resources_of(app).sessionmaker() as db, db.begin():
        challenge = await db.scalar(select(MfaChallenge))
        assert challenge is not None
        assert challenge.expires_at - challenge.created_at == timedelta(minutes=5)
        assert token not in challenge.token_hash
        await db.execute(update(MfaChallenge).values(expires_at=utcnow() - timedelta(seconds=1)))
    response = await client.post(
        SECOND_STEP, json={"mfa_token": token, "code": code_now(secret, 1)}
    )
    assert response.status_code == 401


async def test_the_second_step_body_needs_one_factor(client: httpx.AsyncClient) -> None:
    for body in ({"mfa_token": "x"}, {"mfa_token": "x", "code": "1", "recovery_code": "a"}):
        assert (await client.post(SECOND_STEP, json=body)).status_code == 422
    response = await client.post(SECOND_STEP, json={"mfa_token": "unknown", "code": "123456"})
    assert response.status_code == 401


# --- management ------------------------------------------------------------------------


async def test_new_recovery_codes_replace_the_old_ones(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    secret, codes = await enrolled(app, client)
    headers = bearer((await sign_in(app))["access_token"])
    response = await client.post(
        f"{MFA}/recovery-codes",
        json={"current_password": PASSWORD, "code": code_now(secret, 1)},
        headers=headers,
    )
    assert response.status_code == 200
    new = response.json()["recovery_codes"]
    assert not set(new) & set(codes)
    old = await client.post(
        SECOND_STEP, json={"mfa_token": await mfa_token(client), "recovery_code": codes[0]}
    )
    assert old.status_code == 400
    fresh = await client.post(
        SECOND_STEP, json={"mfa_token": await mfa_token(client), "recovery_code": new[0]}
    )
    assert fresh.status_code == 200


async def test_turning_it_off_needs_the_password_and_a_code(
    app: FastAPI, client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    _secret, codes = await enrolled(app, client)
    headers = bearer((await sign_in(app))["access_token"])
    for body, status in (
        ({"current_password": "wrong-password", "code": codes[0]}, 403),
        ({"current_password": PASSWORD, "code": "zzzz-zzzz-zzzz"}, 400),
    ):
        response = await client.request("DELETE", f"{MFA}/totp", json=body, headers=headers)
        assert response.status_code == status, body
    response = await client.request(
        "DELETE",
        f"{MFA}/totp",
        json={"current_password": PASSWORD, "code": codes[0]},
        headers=headers,
    )
    assert response.status_code == 204  # a recovery code works too
    assert (await login(client)).status_code == 200
    assert (await client.get(MFA, headers=headers)).json() == {
        "totp": False,
        "recovery_codes_left": 0,
    }
    response = await client.request(
        "DELETE",
        f"{MFA}/totp",
        json={"current_password": PASSWORD, "code": codes[1]},
        headers=headers,
    )
    assert (response.status_code, response.json()["code"]) == (409, "mfa_not_enabled")
    trail = await events(app)
    assert "mfa.disabled" in [event.type for event in trail]
    [failed] = [event for event in trail if event.type == "mfa.failed"]
    assert (failed.actor_id, failed.details) == (1, {"during": "disable"})
    notices = await smtp.wait_for(2)
    assert "turned off" in notices[1].text


async def test_a_superuser_resets_a_users_second_factor(
    app: FastAPI, client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    await enrolled(app, client)
    root = await add_user(app, username="root", email="root@example.com", is_superuser=True)
    await add_user(app, username="staff", email="staff@example.com", is_staff=True)
    staff = bearer((await sign_in(app, "staff"))["access_token"])
    assert (await client.delete("/api/v1/users/1/mfa", headers=staff)).status_code == 403
    superuser = bearer((await sign_in(app, "root"))["access_token"])
    assert (await client.delete("/api/v1/users/1/mfa", headers=superuser)).status_code == 204
    assert (await login(client)).status_code == 200
    [reset] = [event for event in await events(app) if event.type == "mfa.reset_by_admin"]
    assert (reset.user_id, reset.actor_id) == (1, root["id"])
    notices = await smtp.wait_for(2)
    assert "administrator" in notices[1].text
    assert (await client.delete("/api/v1/users/1/mfa", headers=superuser)).status_code == 204
    assert (await client.delete("/api/v1/users/99/mfa", headers=superuser)).status_code == 404


async def test_a_password_reset_keeps_the_second_factor(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await enrolled(app, client)
    async with resources_of(app).sessionmaker() as db, db.begin():
        await reset_repo.replace(
            db, 1, hash_token("a-reset-token"), utcnow(), utcnow() + timedelta(hours=1)
        )
    response = await client.post(
        "/api/v1/auth/password-reset/confirm",
        json={"token": "a-reset-token", "new_password": NEW_PASSWORD},
    )
    assert response.status_code == 204
    assert (await login(client, NEW_PASSWORD)).status_code == 403


async def test_without_a_key_in_production_enrolment_is_unavailable(
    app: FastAPI, app_settings: Settings
) -> None:
    """(``app``: the module's database, emptied: no account uses TOTP yet.)"""
    production = app_settings.model_copy(
        update={"environment": "production", "data_encryption_key": None}
    )
    application = create_app(production)
    async with application.router.lifespan_context(application):
        await add_user(application, username="carol", email="carol@example.com")
        headers = bearer((await sign_in(application, "carol"))["access_token"])
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.post(
                f"{MFA}/totp", json={"current_password": PASSWORD}, headers=headers
            )
    assert (response.status_code, response.json()["code"]) == (503, "mfa_unavailable")


async def test_production_refuses_to_start_without_the_key_once_totp_is_used(
    app: FastAPI, client: httpx.AsyncClient, app_settings: Settings
) -> None:
    await enrolled(app, client)
    production = app_settings.model_copy(
        update={"environment": "production", "data_encryption_key": None}
    )
    application = create_app(production)
    with pytest.raises(RuntimeError, match="DATA_ENCRYPTION_KEY is required"):
        async with application.router.lifespan_context(application):
            pass


async def test_rotating_the_key_reseals_the_secrets(
    app: FastAPI, client: httpx.AsyncClient, app_settings: Settings
) -> None:
    secret, _codes = await enrolled(app, client)
    new = new_key()
    env = server_env(
        app_settings.database_url,
        DATA_ENCRYPTION_KEY=new,
        DATA_ENCRYPTION_PREVIOUS_KEYS=DATA_KEY,
    )
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "app", "rotate-data-key"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "re-sealed 1 of 1" in result.stdout
    # The app, now with the new key only, still signs alice in.
    parts = resources_of(app)
    rotated = parts.settings.model_copy(update={"data_encryption_key": SecretStr(new)})
    set_resources(app, dataclasses.replace(parts, data_keys=DataKeys(rotated.data_cipher)))
    try:
        response = await client.post(
            SECOND_STEP, json={"mfa_token": await mfa_token(client), "code": code_now(secret, 1)}
        )
        assert response.status_code == 200, response.text
    finally:
        set_resources(app, parts)
