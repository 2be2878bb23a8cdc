"""Both token codecs (ours and the replaced service's SimpleJWT) answer anything a client
can send with InvalidToken (401), never another exception (a 500): security review,
finding 9 (a header nested 3,000 levels deep raised RecursionError in the legacy codec)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import time
from datetime import timedelta
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pydantic import SecretStr

from app.core.config import Settings
from app.core.errors import InvalidToken
from app.core.security import LegacyTokenCodec, TokenCodec
from tests.conftest import TEST_SECRET_KEY, asgi_client, bearer, running_app

LEGACY_KEY = "django-insecure-the-replaced-services-secret-key"
OURS = TokenCodec(Settings(_env_file=None, secret_key=TEST_SECRET_KEY))
LEGACY = LegacyTokenCodec(LEGACY_KEY, timedelta(minutes=5))
FUZZ = hypothesis_settings(
    max_examples=400,
    deadline=None,
    database=None,
    derandomize=True,  # the same examples every run: CI must not flake
    suppress_health_check=list(HealthCheck),
)

# Real servers, processes or fuzzing: `make test-fast` leaves these out.
pytestmark = pytest.mark.slow


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed(header: Any, payload: Any, key: str, header_json: str | None = None) -> str:
    """A JWS with a valid HS256 signature over whatever header and payload are given, so
    the fuzzing reaches the checks behind the signature."""
    signing_input = (
        f"{b64((header_json or json.dumps(header)).encode())}.{b64(json.dumps(payload).encode())}"
    )
    signature = hmac.new(key.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def only_invalid_token(token: str) -> None:
    """Each codec returns claims or raises InvalidToken; anything else fails the test."""
    with contextlib.suppress(InvalidToken):
        OURS.verify(token, "access")
    with contextlib.suppress(InvalidToken):
        LEGACY.verify(token)


def nested(depth: int) -> str:
    return '{"alg": "HS256", "x": ' + "[" * depth + "]" * depth + "}"


@pytest.mark.parametrize("depth", [100, 3000, 100_000])
def test_deeply_nested_headers_and_payloads_are_invalid_tokens(depth: int) -> None:
    header = signed(None, {}, LEGACY_KEY, header_json=nested(depth))
    payload = ".".join((b64(b'{"alg": "HS256"}'), b64(nested(depth).encode()), "c2ln"))
    for token in (header, payload):
        with pytest.raises(InvalidToken):
            OURS.verify(token, "access")
        with pytest.raises(InvalidToken):
            LEGACY.verify(token)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
claim_names = st.sampled_from(
    ["iss", "aud", "sub", "sid", "jti", "iat", "exp", "nbf", "type", "token_type", "user_id"]
)
claims = st.dictionaries(claim_names | st.text(max_size=6), json_values, max_size=10)
headers = st.fixed_dictionaries(
    {"alg": st.sampled_from(["HS256", "HS512", "none", "RS256", "ES256"]) | json_values},
    optional={
        "kid": json_values,
        "typ": json_values,
        "crit": json_values,
        "jku": json_values,
        "x5c": json_values,
    },
)


@FUZZ
@given(text=st.text(max_size=300))
def test_any_text_is_an_invalid_token(text: str) -> None:
    only_invalid_token(text)


@FUZZ
@given(parts=st.lists(st.binary(max_size=80), min_size=1, max_size=5))
def test_any_segments_are_an_invalid_token(parts: list[bytes]) -> None:
    only_invalid_token(".".join(b64(part) for part in parts))


@FUZZ
@given(header=headers | json_values, payload=claims | json_values, key=st.booleans())
def test_any_signed_header_and_payload_are_invalid_or_valid(
    header: Any, payload: Any, key: bool
) -> None:
    """Correctly signed with either codec's key: whatever the JSON inside, the answer is
    claims or InvalidToken."""
    only_invalid_token(signed(header, payload, TEST_SECRET_KEY if key else LEGACY_KEY))


@FUZZ
@given(
    iat=json_values,
    exp=json_values,
    user_id=json_values,
    token_type=st.just("access") | json_values,
)
def test_legacy_claims_of_any_type(iat: Any, exp: Any, user_id: Any, token_type: Any) -> None:
    payload = {"iat": iat, "exp": exp, "user_id": user_id, "token_type": token_type, "jti": "j"}
    token = signed({"alg": "HS256", "typ": "JWT"}, payload, LEGACY_KEY)
    try:
        claims = LEGACY.verify(token)
    except InvalidToken:
        return
    now = time.time()  # accepted: then every rule holds
    assert claims.issued_at <= now + 5
    assert isinstance(exp, int | float)
    assert exp - claims.issued_at <= 300
    assert token_type == "access"


@pytest.mark.parametrize("path", ["/api/v1/users/profile", "/api/v1/users"])
async def test_a_nested_legacy_header_is_a_401_over_http(settings: Settings, path: str) -> None:
    legacy = settings.model_copy(update={"legacy_simplejwt_signing_key": SecretStr(LEGACY_KEY)})
    token = signed(None, {}, LEGACY_KEY, header_json=nested(3000))
    async with running_app(legacy) as app, asgi_client(app) as client:
        response: httpx.Response = await client.get(path, headers=bearer(token))
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_token"
