"""Security headers and CORS."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from app.core.config import Settings
from tests.conftest import PASSWORD, access_token, add_user, asgi_client, bearer, running_app


async def test_security_headers_on_auth_and_profile(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    registered = await client.post(
        "/api/v1/auth/register",
        json={"username": "alice", "email": "alice@example.com", "password": PASSWORD},
    )
    token = await access_token(app)
    responses = [
        registered,
        await client.post("/api/v1/auth/token", json={"username": "alice", "password": "bad"}),
        await client.get("/api/v1/users/profile", headers=bearer(token)),
        await client.get("/api/v1/users/profile"),
        await client.post("/api/v1/auth/register", content=b"x" * (2 * 1024 * 1024)),
    ]
    for response in responses:
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert response.headers["cache-control"] == "no-store"
    assert [r.status_code for r in responses] == [201, 401, 200, 401, 413]


async def test_docs_are_cacheable_but_nosniff(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "cache-control" not in response.headers
    # The liveness probe's pre-encoded answer is what its documented model says.
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"status": "ok"}


@pytest.mark.parametrize(
    ("origin", "allowed"), [("https://app.example", True), ("https://evil.example", False)]
)
async def test_cors_allows_only_configured_origins(
    settings: Settings, origin: str, allowed: bool
) -> None:
    configured = settings.model_copy(update={"cors_origins": ["https://app.example"]})
    async with running_app(configured) as app, asgi_client(app) as client:
        await add_user(app)
        preflight = await client.options(
            "/api/v1/users/profile",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        )
    if allowed:
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == origin
        assert "access-control-allow-credentials" not in preflight.headers
    else:
        assert preflight.status_code == 400
        assert "access-control-allow-origin" not in preflight.headers


async def test_cors_preflight_with_a_copied_origin_just_works(settings: Settings) -> None:
    """CORS_ORIGINS='http://localhost:3000/' (trailing slash) serves that front end."""
    origins = Settings.model_validate(
        {"cors_origins": "http://localhost:3000/", "secret_key": "k" * 32}
    ).cors_origins
    configured = settings.model_copy(update={"cors_origins": origins})
    async with running_app(configured) as app, asgi_client(app) as client:
        await add_user(app)
        preflight = await client.options(
            "/api/v1/users/profile",
            headers={
                "Origin": "http://localhost:3000",
                "Access-Control-Request-Method": "PATCH",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        answer = await client.get(
            "/api/v1/users/profile", headers={"Origin": "http://localhost:3000"}
        )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert preflight.headers["access-control-max-age"] == "600"
    assert "PATCH" in preflight.headers["access-control-allow-methods"]
    assert answer.status_code == 401
    assert answer.headers["access-control-allow-origin"] == "http://localhost:3000"
    exposed = {
        h.strip().lower() for h in answer.headers["access-control-expose-headers"].split(",")
    }
    assert {"retry-after", "x-request-id"} <= exposed
    assert answer.headers["x-request-id"]
