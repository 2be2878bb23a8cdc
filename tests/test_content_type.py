"""Content-Type rules (issue 17 item 4): a body of a media type an operation does not accept
is 415 `unsupported_media_type`, naming what it accepts; on both databases."""

from __future__ import annotations

import io
import json
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from PIL import Image

from app.routers.content_type import MediaTypeRoute, accepted_media_types
from tests.conftest import PASSWORD, access_token, add_user, bearer

TOKEN = "/api/v1/auth/token"
REGISTER = "/api/v1/auth/register"
PROFILE = "/api/v1/users/profile"
AVATAR = "/api/v1/users/profile/avatar"
JSON_BODY = json.dumps({"username": "alice", "password": PASSWORD}).encode()


def body_operations(app: FastAPI) -> list[tuple[str, str, tuple[str, ...]]]:
    """(method, path with ids filled in, accepted media types) of every documented
    operation with a request body."""
    schema = app.openapi()
    found = []
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if "requestBody" in operation:
                accepted = tuple(operation["requestBody"]["content"])
                found.append((method.upper(), path.replace("{user_id}", "1"), accepted))
    return found


def test_the_api_operations_with_a_body_are_many(app: FastAPI) -> None:
    """Guards the parametrised test below, which reads them from the app."""
    assert len(body_operations(app)) >= 10


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "text/plain;charset=UTF-8",  # fetch() with a string body and no headers
        "application/x-www-form-urlencoded",  # curl -d
        None,
        "application/xml",
    ],
)
async def test_every_body_of_another_media_type_is_415(
    client: httpx.AsyncClient, app: FastAPI, content_type: str | None
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    for method, path, accepted in body_operations(app):
        if content_type and content_type.split(";")[0] in accepted:
            continue  # login takes the OAuth2 form
        response = await client.request(method, path, content=JSON_BODY, headers=headers)
        assert response.status_code == 415, (method, path, response.text)
        body = response.json()
        assert body["code"] == "unsupported_media_type"
        for media_type in accepted:
            assert media_type in body["detail"], (method, path, body)


async def test_the_detail_says_what_to_send(client: httpx.AsyncClient) -> None:
    response = await client.post(
        REGISTER,
        content=JSON_BODY,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.json() == {
        "detail": "Content-Type 'application/x-www-form-urlencoded' is not accepted here (curl "
        "-d sends that: add -H 'Content-Type: application/json'): send the body as "
        "application/json",
        "code": "unsupported_media_type",
    }
    missing = await client.post(REGISTER, content=JSON_BODY)
    assert missing.json()["detail"] == "The body has no Content-Type: send it as application/json"


@pytest.mark.parametrize(
    "content_type",
    ["application/json; charset=utf-8", "APPLICATION/JSON", "application/merge-patch+json"],
)
async def test_json_and_structured_json_types_are_read(
    client: httpx.AsyncClient, app: FastAPI, content_type: str
) -> None:
    await add_user(app)
    token = await access_token(app)
    response = await client.patch(
        PROFILE,
        content=json.dumps({"first_name": "Ada"}),
        headers={**bearer(token), "content-type": content_type},
    )
    assert response.status_code == 200, response.text
    assert response.json()["first_name"] == "Ada"


async def test_an_empty_body_is_left_to_the_operation(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    """No body, whatever its Content-Type, is not a body of the wrong type: the operation
    says what is missing (422), and the profile's body-less POST keeps working."""
    response = await client.post(REGISTER, content=b"", headers={"content-type": "text/plain"})
    assert response.status_code == 422
    await add_user(app)
    token = await access_token(app)
    profile = await client.post(
        PROFILE, content=b"anything", headers={**bearer(token), "content-type": "text/plain"}
    )
    assert profile.status_code == 200  # declares no body: nothing to refuse


async def test_login_keeps_the_oauth2_form_and_refuses_json_sent_as_one(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    await add_user(app)
    for send in (
        {"data": {"username": "alice", "password": PASSWORD}},  # urlencoded
        {"files": {"username": (None, "alice"), "password": (None, PASSWORD)}},  # multipart
        {"json": {"username": "alice", "password": PASSWORD}},
    ):
        response = await client.post(TOKEN, **send)
        assert response.status_code == 200, (send, response.text)
    as_form = await client.post(
        TOKEN, content=JSON_BODY, headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert as_form.status_code == 415
    assert as_form.json()["detail"] == (
        "The body is JSON but its Content-Type is 'application/x-www-form-urlencoded' (curl -d "
        "sends that): send it with 'Content-Type: application/json'"
    )
    plain = await client.post(TOKEN, content=JSON_BODY, headers={"content-type": "text/plain"})
    assert plain.status_code == 415
    assert plain.json()["detail"] == (
        "Content-Type 'text/plain' is not accepted here: send the body as application/json or "
        "application/x-www-form-urlencoded or multipart/form-data"
    )


async def test_the_avatar_upload_keeps_multipart(client: httpx.AsyncClient, app: FastAPI) -> None:
    await add_user(app)
    token = await access_token(app)
    image = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(image, "PNG")
    files = {"file": ("me.png", image.getvalue(), "image/png")}
    uploaded = await client.put(AVATAR, files=files, headers=bearer(token))
    assert uploaded.status_code == 200, uploaded.text
    as_json = await client.put(AVATAR, json={"file": "x"}, headers=bearer(token))
    assert as_json.status_code == 415
    assert as_json.json()["detail"] == (
        "Content-Type 'application/json' is not accepted here: send the body as multipart/form-data"
    )


def test_every_api_route_with_a_body_checks_its_media_type(app: FastAPI) -> None:
    routes: list[Any] = [
        context.original_route
        for context in iter_route_contexts(app.routes)
        if isinstance(context.original_route, APIRoute) and context.original_route.include_in_schema
    ]
    with_body = [route for route in routes if accepted_media_types(route)]
    assert len(with_body) >= 10
    for route in with_body:
        assert isinstance(route, MediaTypeRoute), route.path
