from __future__ import annotations

import base64
import json
import time
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from jose import jwt
from sqlalchemy import delete

from app.models import User
from app.resources import resources_of
from tests.conftest import TEST_SECRET_KEY, access_token, add_user, bearer, set_columns
from tests.test_register import PUBLIC_FIELDS

PROFILE = "/api/v1/users/profile"


def b64(data: dict[str, Any] | bytes) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def claims(user: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """The claims of ``user``'s real access token (live session), with ``overrides``."""
    now = int(time.time())
    values: dict[str, Any] = {
        **jwt.get_unverified_claims(user["token"]),
        "iat": now,
        "exp": now + 600,
        "jti": "abc",
    }
    values.update(overrides)
    return {key: value for key, value in values.items() if value is not None}


def sign(payload: dict[str, Any], key: str = TEST_SECRET_KEY, algorithm: str = "HS256") -> str:
    return jwt.encode(payload, key, algorithm=algorithm)


@pytest.fixture
async def alice(app: FastAPI) -> dict[str, Any]:
    user = await add_user(app)
    user["token"] = await access_token(app)
    return user


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_profile_returns_exactly_the_public_fields(
    client: httpx.AsyncClient, alice: dict[str, Any], method: str
) -> None:
    response = await client.request(method, PROFILE, headers=bearer(alice["token"]))
    assert response.status_code == 200
    body = response.json()
    assert set(body) == PUBLIC_FIELDS
    assert body["id"] == alice["id"]
    assert body["username"] == "alice"
    assert body["email"] == "alice@example.com"
    assert body["last_login"] is not None
    assert "password" not in response.text
    assert "argon2" not in response.text


@pytest.mark.parametrize("content", [b"", b"{}", b'{"anything": 1}'])
async def test_post_profile_accepts_empty_or_any_json_body(
    client: httpx.AsyncClient, alice: dict[str, Any], content: bytes
) -> None:
    response = await client.post(
        PROFILE,
        content=content,
        headers={**bearer(alice["token"]), "content-type": "application/json"},
    )
    assert response.status_code == 200
    assert response.json()["username"] == "alice"


async def test_profile_a_token_with_a_tampered_claim_is_401(
    client: httpx.AsyncClient, alice: dict[str, Any]
) -> None:
    header, _, signature = alice["token"].split(".")
    forged = ".".join([header, b64(claims(alice, sub=str(alice["id"] + 1))), signature])
    response = await client.get(PROFILE, headers=bearer(forged))
    assert response.status_code == 401


def forged_tokens(user: dict[str, Any]) -> dict[str, str]:
    now = int(time.time())
    user_id = user["id"]
    good = claims(user)
    return {
        "alg-none": f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(good)}.",
        "alg-none-with-signature": f"{b64({'alg': 'none'})}.{b64(good)}.c2ln",
        "other-key": sign(good, key="another-secret-key-that-is-long-enough-42"),
        "other-hmac-alg": sign(good, algorithm="HS512"),
        "alg-not-a-string": f"{b64({'alg': ['HS256']})}.{b64(good)}.c2ln",
        "header-not-json": f"{b64(b'nope')}.{b64(good)}.c2ln",
        "payload-not-json": f"{b64({'alg': 'HS256'})}.{b64(b'[1,2')}.c2ln",
        "expired": sign(claims(user, iat=now - 1000, exp=now - 10)),
        # Expired and wrong in another respect: invalid, never merely expired (jose's
        # jwt.decode reports ExpiredSignatureError before some of these checks).
        "expired-other-key": sign(
            claims(user, iat=now - 1000, exp=now - 10),
            key="another-secret-key-that-is-long-enough-42",
        ),
        "expired-bad-signature": sign(claims(user, iat=now - 1000, exp=now - 10))[:-4] + "AAAA",
        "expired-alg-none": f"{b64({'alg': 'none'})}.{b64(claims(user, exp=now - 10))}.",
        "expired-refresh-type": sign(claims(user, type="refresh", exp=now - 10)),
        "expired-other-aud": sign(claims(user, aud="another-service", exp=now - 10)),
        "expired-no-jti": sign(claims(user, jti=None, exp=now - 10)),
        "expired-sid-not-hex": sign(claims(user, sid="x" * 32, exp=now - 10)),
        "expired-nbf-future": sign(claims(user, nbf=now + 3600, exp=now - 10)),
        "no-exp": sign(claims(user, exp=None)),
        "no-sub": sign(claims(user, sub=None)),
        "no-type": sign(claims(user, type=None)),
        "no-jti": sign(claims(user, jti=None)),
        "no-iat": sign(claims(user, iat=None)),
        "refresh-type": sign(claims(user, type="refresh")),
        "sub-not-a-number": sign(claims(user, sub="alice")),
        "sub-int-not-string": sign(claims(user, sub=user_id)),
        "no-iss": sign(claims(user, iss=None)),
        "no-aud": sign(claims(user, aud=None)),
        "other-iss": sign(claims(user, iss="someone-else")),
        "other-aud": sign(claims(user, aud="another-service")),
        "no-sid": sign(claims(user, sid=None)),
        "sid-not-hex": sign(claims(user, sid="x" * 32)),
        "sid-unknown": sign(claims(user, sid="0" * 32)),
        "kid-elsewhere": jwt.encode(claims(user), TEST_SECRET_KEY, headers={"kid": "other"}),
        "jku-header": jwt.encode(
            claims(user), TEST_SECRET_KEY, headers={"jku": "http://127.0.0.1:9/keys"}
        ),
        "kid-not-a-string": jwt.encode(claims(user), TEST_SECRET_KEY, headers={"kid": ["x"]}),
        "sub-negative": sign(claims(user, sub="-1")),
        "sub-too-big": sign(claims(user, sub="9" * 30)),
        "exp-string": sign(claims(user, exp="tomorrow")),
        "nbf-future": sign(claims(user, nbf=now + 3600)),
        "two-parts": "abc.def",
        "garbage": "not a token",
        "empty-segments": "..",
    }


FORGED_CASES = list(forged_tokens({"id": 1, "token": jwt.encode({"sub": "1"}, "k" * 32)}))


@pytest.mark.parametrize("case", FORGED_CASES)
async def test_forged_or_invalid_tokens_are_401(
    client: httpx.AsyncClient, alice: dict[str, Any], case: str
) -> None:
    token = forged_tokens(alice)[case]
    response = await client.post(PROFILE, headers=bearer(token))
    assert response.status_code == 401, response.text
    expected = {"sid-unknown": "session_revoked", "expired": "token_expired"}
    body = response.json()
    assert body["code"] == expected.get(case, "invalid_token")
    # RFC 6750: a token came and is refused.
    assert response.headers["www-authenticate"] == (
        f'Bearer error="invalid_token", error_description="{body["detail"]}"'
    )


async def test_an_expired_access_token_says_renew_it(
    client: httpx.AsyncClient, alice: dict[str, Any]
) -> None:
    now = int(time.time())
    token = sign(claims(alice, iat=now - 1000, exp=now - 1))
    response = await client.get(PROFILE, headers=bearer(token))
    assert response.status_code == 401
    assert response.json() == {
        "detail": "The access token has expired: get a new one with the refresh token",
        "code": "token_expired",
    }
    assert response.headers["www-authenticate"] == (
        'Bearer error="invalid_token", '
        'error_description="The access token has expired: get a new one with the refresh token"'
    )


async def test_a_correctly_signed_token_is_accepted(
    client: httpx.AsyncClient, alice: dict[str, Any]
) -> None:
    """Guards the forged-token cases above: the same builder with nothing wrong passes."""
    response = await client.post(PROFILE, headers=bearer(sign(claims(alice))))
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ({}, "Not authenticated: send the access token as 'Authorization: Bearer <token>'"),
        (
            {"Authorization": ""},
            "Not authenticated: send the access token as 'Authorization: Bearer <token>'",
        ),
        (
            {"Authorization": "Bearer"},
            "The Authorization header has no token after 'Bearer': "
            "send 'Authorization: Bearer <token>'",
        ),
        (
            {"Authorization": "Basic YWxpY2U6cGFzcw=="},
            "The Authorization header's scheme is 'Basic', not 'Bearer': "
            "send 'Authorization: Bearer <token>'",
        ),
        (
            {"Authorization": "JWT eyJhbGciOiJIUzI1NiJ9.e30.c2ln"},
            "The Authorization header's scheme is 'JWT', not 'Bearer': "
            "send 'Authorization: Bearer <token>'",
        ),
        (
            {"Authorization": "eyJhbGciOiJIUzI1NiJ9.e30.c2ln"},
            "The Authorization header holds no scheme: send 'Authorization: Bearer <token>'",
        ),
    ],
    ids=["none", "empty", "bearer-alone", "basic", "jwt-scheme", "bare-token"],
)
@pytest.mark.parametrize("method", ["GET", "PATCH"])  # ReadCurrentUser, CurrentUser
async def test_missing_or_non_bearer_authorization_is_401(
    client: httpx.AsyncClient, headers: dict[str, str], detail: str, method: str
) -> None:
    response = await client.request(method, PROFILE, headers=headers, json={})
    assert response.status_code == 401
    # No bearer credentials: the bare challenge, without an error attribute (RFC 6750 3.1).
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json() == {"detail": detail, "code": "not_authenticated"}


async def test_oversized_authorization_header_is_401(
    client: httpx.AsyncClient, alice: dict[str, Any]
) -> None:
    response = await client.get(PROFILE, headers=bearer(alice["token"] + "A" * 9000))
    assert response.status_code == 401
    assert response.json()["detail"] == "Authorization header too large"


async def test_inactive_user_is_401(
    client: httpx.AsyncClient, app: FastAPI, alice: dict[str, Any]
) -> None:
    await set_columns(app, is_active=False)
    response = await client.get(PROFILE, headers=bearer(alice["token"]))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == (
        'Bearer error="invalid_token", error_description="User account is disabled"'
    )
    assert response.json()["code"] == "inactive_user"


async def test_deleted_user_is_404(
    client: httpx.AsyncClient, app: FastAPI, alice: dict[str, Any]
) -> None:
    async with resources_of(app).sessionmaker() as db, db.begin():
        await db.execute(delete(User))
    response = await client.post(PROFILE, headers=bearer(alice["token"]))
    assert response.status_code == 404
    assert response.json() == {"detail": "User not found", "code": "user_not_found"}
