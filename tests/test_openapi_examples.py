"""Every request example of /openapi.json works as /docs' "Try it out" sends it (issue 17
item 6): each is sent to a fresh service, after the register and login examples, and must
get its operation's documented success status; on both databases."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.core.config import Settings
from app.main import create_app
from tests.conftest import TEST_SECRET_KEY, bearer, set_columns

REGISTER = ("/api/v1/auth/register", "post", "application/json")
LOGIN = ("/api/v1/auth/token", "post", "application/json")
# Their bodies hold a token from another answer or an email, or an authenticator app's code:
# no fixed example could work.
WITHOUT_EXAMPLES = {
    ("/api/v1/auth/token/refresh", "post"),
    ("/api/v1/auth/logout", "post"),
    ("/api/v1/auth/password-reset/confirm", "post"),
    ("/api/v1/auth/verify-email", "post"),
    ("/api/v1/auth/token/mfa", "post"),
    ("/api/v1/users/profile/mfa/totp/confirm", "post"),
    ("/api/v1/users/profile/mfa/totp", "delete"),
    ("/api/v1/users/profile/mfa/recovery-codes", "post"),
    ("/api/v1/users/profile/avatar", "put"),  # a file
}


def _schema() -> dict[str, Any]:
    return create_app(Settings(_env_file=None, secret_key=TEST_SECRET_KEY)).openapi()


SCHEMA = _schema()


def request_examples() -> list[tuple[str, str, str, str]]:
    """(path, method, media type, example name) of every request example."""
    found: list[tuple[str, str, str, str]] = []
    for path, item in SCHEMA["paths"].items():
        for method, operation in item.items():
            for media_type, content in operation.get("requestBody", {}).get("content", {}).items():
                found.extend(
                    (path, method, media_type, name) for name in content.get("examples", {})
                )
    return found


def example(path: str, method: str, media_type: str, name: str = "example") -> dict[str, Any]:
    content = SCHEMA["paths"][path][method]["requestBody"]["content"][media_type]
    value: dict[str, Any] = content["examples"][name]["value"]
    return value


def success_status(path: str, method: str) -> int:
    return min(int(code) for code in SCHEMA["paths"][path][method]["responses"] if code[0] == "2")


def test_the_operations_without_examples_are_those_that_need_a_token() -> None:
    with_examples = {(path, method) for path, method, *_ in request_examples()}
    with_body = {
        (path, method)
        for path, item in SCHEMA["paths"].items()
        for method, operation in item.items()
        if "requestBody" in operation
    }
    assert with_body - with_examples == WITHOUT_EXAMPLES
    assert len(with_examples) >= 8


def test_the_auth_operations_are_listed_first() -> None:
    tags = [tag["name"] for tag in SCHEMA["tags"]]
    assert tags[0] == "auth"
    used = {tag for item in SCHEMA["paths"].values() for op in item.values() for tag in op["tags"]}
    assert used <= set(tags)


async def send(
    client: httpx.AsyncClient,
    path: str,
    method: str,
    media_type: str,
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    if media_type == "application/json":
        return await client.request(method, path, json=body, headers=headers)
    if media_type == "multipart/form-data":
        files = {key: (None, str(value)) for key, value in body.items()}
        return await client.request(method, path, files=files, headers=headers)
    assert media_type == "application/x-www-form-urlencoded"
    return await client.request(method, path, data=body, headers=headers)


@pytest.mark.parametrize(("path", "method", "media_type", "name"), request_examples(), ids="-".join)
async def test_every_request_example_succeeds(
    client: httpx.AsyncClient, app: FastAPI, path: str, method: str, media_type: str, name: str
) -> None:
    headers: dict[str, str] = {}
    url = path
    if (path, method, media_type) != REGISTER:
        registered = await send(client, *REGISTER, example(*REGISTER))
        assert registered.status_code == 201, registered.text
        logged_in = await send(client, *LOGIN, example(*LOGIN))
        assert logged_in.status_code == 200, logged_in.text
        headers = bearer(logged_in.json()["access_token"])
        if "{user_id}" in path:  # an admin operation: alice is the superuser, on herself
            await set_columns(app, is_superuser=True)
            url = path.replace("{user_id}", str(registered.json()["id"]))
    body = example(path, method, media_type, name)
    response = await send(client, url, method, media_type, body, headers)
    assert response.status_code == success_status(path, method), response.text
