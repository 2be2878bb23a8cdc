"""Error rendering: body limits, unexpected errors, unknown routes and methods."""

from __future__ import annotations

from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.core.errors import bearer_challenge
from app.resources import resources_of
from tests.conftest import asgi_client, user_payload

REGISTER = "/api/v1/auth/register"


async def test_body_over_the_limit_is_413_from_content_length(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    limit = resources_of(app).settings.max_body_bytes
    payload = user_payload(first_name="x" * 10)
    padding = " " * (limit + 1)
    response = await client.post(
        REGISTER,
        content=padding.encode() + httpx.Request("POST", "/", json=payload).content,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["code"] == "request_too_large"
    count = await client.post(
        "/api/v1/auth/token", json={"username": "alice", "password": payload["password"]}
    )
    assert count.status_code == 401  # nothing was registered


async def test_streamed_body_over_the_limit_is_413(client: httpx.AsyncClient, app: FastAPI) -> None:
    limit = resources_of(app).settings.max_body_bytes
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b'{"username": "'
        for _ in range(limit // 65536 + 2):
            sent += 65536
            yield b"a" * 65536

    response = await client.post(
        REGISTER, content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["code"] == "request_too_large"


async def test_body_without_a_length_outside_http_1_is_counted(app: FastAPI) -> None:
    """A body with neither Content-Length nor Transfer-Encoding (HTTP/2 framing) is
    counted as it arrives: only an HTTP/1 request without them is known to have none."""
    limit = resources_of(app).settings.max_body_bytes
    chunks = [b'{"username": "', *[b"a" * 65536] * (limit // 65536 + 2)]
    read = 0
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        nonlocal read
        read += 1
        return {"type": "http.request", "body": chunks[read - 1], "more_body": read < len(chunks)}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "2",
        "method": "POST",
        "scheme": "http",
        "path": REGISTER,
        "raw_path": REGISTER.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
    }
    await app(scope, receive, send)
    assert sent[0]["status"] == 413
    assert read < len(chunks)  # refused before the whole body was read


async def test_invalid_content_length_is_413(client: httpx.AsyncClient) -> None:
    response = await client.post(
        REGISTER,
        content=b"{}",
        headers={"content-length": "abc", "content-type": "application/json"},
    )
    assert response.status_code in (400, 413)


async def test_body_at_the_limit_is_read(client: httpx.AsyncClient, app: FastAPI) -> None:
    limit = resources_of(app).settings.max_body_bytes
    body = httpx.Request("POST", "/", json=user_payload()).content
    content = body + b" " * (limit - len(body))
    response = await client.post(
        REGISTER, content=content, headers={"content-type": "application/json"}
    )
    assert response.status_code == 201


async def test_unexpected_errors_are_a_generic_500(
    fresh_app: FastAPI, caplog: pytest.LogCaptureFixture
) -> None:
    async def explode() -> None:
        raise RuntimeError("secret internal detail")

    fresh_app.add_api_route("/boom", explode)
    async with asgi_client(fresh_app) as client:
        response = await client.get("/boom")
    assert response.status_code == 500
    assert response.json() == {"detail": "Internal server error", "code": "internal_error"}
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"
    assert "secret internal detail" not in response.text
    assert "secret internal detail" in caplog.text


async def test_unknown_route_is_json_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/nope")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found", "code": "not_found"}


async def test_wrong_method_is_json_405(client: httpx.AsyncClient) -> None:
    response = await client.delete("/api/v1/auth/token")
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"


async def test_405_allow_lists_every_method_of_the_path(client: httpx.AsyncClient) -> None:
    """Not only the methods of the first route matching the path (Starlette's answer)."""
    response = await client.put("/api/v1/users/profile", json={})
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"
    allowed = {method.strip() for method in response.headers["allow"].split(",")}
    assert {"GET", "PATCH", "DELETE"} <= allowed
    assert "PUT" not in allowed


async def test_preflight_without_cors_names_cors_origins(client: httpx.AsyncClient) -> None:
    """With CORS_ORIGINS unset a browser's preflight reaches the routes: the 405 says why."""
    response = await client.options(
        "/api/v1/users/profile",
        headers={"Origin": "http://localhost:3000", "Access-Control-Request-Method": "GET"},
    )
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"
    assert "CORS_ORIGINS" in response.json()["detail"]
    assert "access-control-allow-origin" not in response.headers


def test_a_bearer_challenge_quotes_only_what_rfc_6750_allows() -> None:
    """error_description: printable ASCII without a quote or a backslash."""
    assert bearer_challenge("invalid_token", 'a "b" \\ c\r\nd é') == {
        "WWW-Authenticate": 'Bearer error="invalid_token", error_description="a \'b\' / cd "'
    }
