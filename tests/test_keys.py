"""RS256/ES256 signing, the JWKS endpoint, key rotation and algorithm confusion."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import FastAPI
from jose import jwk, jwt
from pydantic import ValidationError

from app.core.config import Settings
from app.core.security import TokenCodec
from app.main import create_app
from tests.conftest import PASSWORD, add_user, asgi_client, bearer, running_app

PROFILE = "/api/v1/users/profile"


def private_pem(algorithm: str) -> bytes:
    key = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if algorithm == "RS256"
        else ec.generate_private_key(ec.SECP256R1())
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_pem(private: bytes) -> bytes:
    key = serialization.load_pem_private_key(private, password=None)
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def asymmetric(settings: Settings, algorithm: str, key: Path, previous: list[Path]) -> Settings:
    return Settings(
        _env_file=None,
        database_url=settings.database_url,
        jwt_algorithm=algorithm,
        jwt_private_key_file=key,
        jwt_previous_public_key_files=",".join(str(path) for path in previous),
    )


@pytest.fixture(params=["RS256", "ES256"])
def algorithm(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


@pytest.fixture
async def signed_app(
    settings: Settings, algorithm: str, tmp_path: Path
) -> AsyncIterator[tuple[FastAPI, Path]]:
    key = write(tmp_path / "current.pem", private_pem(algorithm))
    async with running_app(asymmetric(settings, algorithm, key, [])) as app:
        yield app, key


async def login(app: FastAPI, client: httpx.AsyncClient) -> dict[str, Any]:
    """The tokens the app issues (with its asymmetric key) at login."""
    await add_user(app)
    response = await client.post(
        "/api/v1/auth/token", json={"username": "alice", "password": PASSWORD}
    )
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


async def test_tokens_verify_with_the_published_jwks(
    signed_app: tuple[FastAPI, Path], algorithm: str
) -> None:
    app, _ = signed_app
    async with asgi_client(app) as client:
        tokens = await login(app, client)
        jwks = (await client.get("/.well-known/jwks.json")).json()
        assert (
            await client.get(PROFILE, headers=bearer(tokens["access_token"]))
        ).status_code == 200
    (public,) = jwks["keys"]
    assert public["alg"] == algorithm
    assert public["use"] == "sig"
    assert "d" not in public  # never the private part
    header = jwt.get_unverified_header(tokens["access_token"])
    assert header["alg"] == algorithm
    assert header["kid"] == public["kid"]
    # what another service does: pick the key by kid, verify with one algorithm, iss and aud
    claims = jwt.decode(
        tokens["access_token"],
        jwk.construct(public, algorithm),
        algorithms=[algorithm],
        audience="userservice",
        issuer="userservice",
    )
    assert claims["type"] == "access"


async def test_previous_keys_still_verify_after_rotation(
    settings: Settings, algorithm: str, tmp_path: Path
) -> None:
    old_key = write(tmp_path / "old.pem", private_pem(algorithm))
    new_key = write(tmp_path / "new.pem", private_pem(algorithm))
    old_public = write(tmp_path / "old.pub.pem", public_pem(old_key.read_bytes()))
    old_settings = asymmetric(settings, algorithm, old_key, [])
    async with running_app(old_settings) as app, asgi_client(app) as client:
        old_tokens = await login(app, client)
    rotated = asymmetric(settings, algorithm, new_key, [old_public])
    application = create_app(rotated)  # not running_app: keep the tables
    async with application.router.lifespan_context(application), asgi_client(application) as client:
        assert (
            await client.get(PROFILE, headers=bearer(old_tokens["access_token"]))
        ).status_code == 200
        refreshed = await client.post(
            "/api/v1/auth/token/refresh", json={"refresh_token": old_tokens["refresh_token"]}
        )
        assert refreshed.status_code == 200
        new_kid = jwt.get_unverified_header(refreshed.json()["access_token"])["kid"]
        jwks = (await client.get("/.well-known/jwks.json")).json()["keys"]
    assert len(jwks) == 2
    assert jwks[0]["kid"] == new_kid
    assert jwt.get_unverified_header(old_tokens["access_token"])["kid"] == jwks[1]["kid"]


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def test_algorithm_confusion_and_foreign_keys_are_401(
    signed_app: tuple[FastAPI, Path], algorithm: str
) -> None:
    app, key = signed_app
    async with asgi_client(app) as client:
        tokens = await login(app, client)
        claims = jwt.get_unverified_claims(tokens["access_token"])
        kid = jwt.get_unverified_header(tokens["access_token"])["kid"]
        public = public_pem(key.read_bytes()).decode()
        now = int(time.time())
        foreign = private_pem(algorithm).decode()
        forged = {
            # HMAC signed with the public key as secret (the classic confusion attack)
            "hs256-with-public-key": _hmac_with(public, claims, kid),
            "none": f"{_b64({'alg': 'none', 'kid': kid})}.{_b64(claims)}.",
            "foreign-key-same-kid": jwt.encode(
                claims, foreign, algorithm=algorithm, headers={"kid": kid}
            ),
            "unknown-kid": jwt.encode(
                claims, foreign, algorithm=algorithm, headers={"kid": "elsewhere"}
            ),
            "no-kid": jwt.encode(claims, foreign, algorithm=algorithm),
            "jku": jwt.encode(
                claims,
                foreign,
                algorithm=algorithm,
                headers={"kid": kid, "jku": "http://127.0.0.1:9/jwks.json"},
            ),
            "expired": jwt.encode(
                {**claims, "exp": now - 5}, foreign, algorithm=algorithm, headers={"kid": kid}
            ),
        }
        for case, token in forged.items():
            response = await client.get(PROFILE, headers=bearer(token))
            assert response.status_code == 401, case


def _hmac_with(secret: str, claims: dict[str, Any], kid: str) -> str:
    import hashlib
    import hmac

    signing_input = f"{_b64({'alg': 'HS256', 'typ': 'JWT', 'kid': kid})}.{_b64(claims)}"
    signature = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


async def test_jwks_is_404_with_hmac(client: httpx.AsyncClient) -> None:
    response = await client.get("/.well-known/jwks.json")
    assert response.status_code == 404
    assert response.json()["code"] == "no_public_keys"


def test_key_settings_are_validated(tmp_path: Path) -> None:
    rsa_key = write(tmp_path / "rsa.pem", private_pem("RS256"))
    with pytest.raises(ValidationError, match="needs JWT_PRIVATE_KEY_FILE"):
        Settings(_env_file=None, jwt_algorithm="RS256")
    with pytest.raises(ValidationError, match="does not exist"):
        Settings(_env_file=None, jwt_algorithm="ES256", jwt_private_key_file=tmp_path / "nope")
    with pytest.raises(ValidationError, match="signs with SECRET_KEY"):
        Settings(_env_file=None, secret_key="k" * 32, jwt_private_key_file=rsa_key)
    # an RSA key for ES256, or garbage, is refused when the codec is built at start-up
    mismatched = Settings(_env_file=None, jwt_algorithm="ES256", jwt_private_key_file=rsa_key)
    with pytest.raises(ValueError, match="ES256"):
        TokenCodec(mismatched)
    garbage = write(tmp_path / "garbage.pem", b"not a key")
    with pytest.raises(ValueError, match="not a usable"):
        TokenCodec(Settings(_env_file=None, jwt_algorithm="RS256", jwt_private_key_file=garbage))
