"""The pages of the default email links (app/routers/pages.py) over HTTP: their headers, the
service name escaped, their assets served locally, nothing in the API schema, and opening a
page with a token in its address writes nothing: the token still works afterwards. Both
backends. In a real browser: tests/test_pages_browser.py and test_pages_verify_browser.py."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from app.core.config import Settings
from app.models import PasswordResetToken
from app.models.base import utcnow
from app.repositories import password_reset as tokens_repo
from app.resources import resources_of
from app.routers.pages import CONTENT_SECURITY_POLICY
from app.services.password_reset import hash_token
from tests.conftest import add_user, asgi_client, db_rows, running_app

PAGES = ["/account/reset-password", "/account/verify-email"]
TOKEN = "a-token-as-the-reset-email-would-hold-it"
NEW_PASSWORD = "another-Good-passphrase-42"


@pytest.mark.parametrize("path", PAGES)
async def test_a_page_is_html_with_strict_headers(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path, params={"token": TOKEN})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    for directive in (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "form-action 'none'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ):
        assert directive in CONTENT_SECURITY_POLICY
    assert response.headers.get_list("referrer-policy") == ["no-referrer"]
    assert response.headers.get_list("cache-control") == ["no-store"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    # No inline script or style: only the local files, which the policy allows.
    assert "<script>" not in response.text
    assert "style=" not in response.text
    assert '<script src="/account-assets/account.js" defer></script>' in response.text
    assert TOKEN not in response.text  # the page is the same whatever the address holds


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/account-assets/account.js", "text/javascript; charset=utf-8"),
        ("/account-assets/account.css", "text/css; charset=utf-8"),
        ("/account-assets/favicon.svg", "image/svg+xml"),
    ],
)
async def test_the_assets_are_served_by_the_service(
    client: httpx.AsyncClient, path: str, content_type: str
) -> None:
    response = await client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_the_service_name_is_escaped(settings: Settings) -> None:
    named = settings.model_copy(update={"service_name": '<script>alert("x")</script> & Co'})
    async with running_app(named) as app, asgi_client(app) as client:
        for path in PAGES:
            text = (await client.get(path)).text
            assert "<script>alert" not in text
            assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; Co" in text


async def test_the_pages_are_not_in_the_api_schema(app: FastAPI) -> None:
    paths = app.openapi()["paths"]
    assert not [path for path in paths if path.startswith(("/account", "/account-assets"))]


async def test_the_pages_answer_only_get(client: httpx.AsyncClient) -> None:
    for path in PAGES:
        response = await client.post(path, params={"token": TOKEN})
        assert response.status_code == 405


async def _reset_tokens(app: FastAPI) -> list[tuple[object, ...]]:
    async with resources_of(app).sessionmaker() as db:
        rows = await db.scalars(select(PasswordResetToken).order_by(PasswordResetToken.id))
        return [(r.id, r.user_id, r.token_hash, r.expires_at, r.used_at) for r in rows]


async def test_opening_the_reset_page_does_not_use_the_token(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """A mail scanner opening the link (GET, HEAD, with the token) leaves the token usable."""
    user = await add_user(app)
    now = utcnow()
    async with resources_of(app).sessionmaker() as db, db.begin():
        await tokens_repo.replace(db, user["id"], hash_token(TOKEN), now, now + timedelta(hours=1))
    users, tokens = await db_rows(app), await _reset_tokens(app)

    for path in PAGES:
        for _ in range(2):
            assert (await client.get(path, params={"token": TOKEN})).status_code == 200
        assert (await client.head(path, params={"token": TOKEN})).status_code in (200, 405)
    assert await db_rows(app) == users
    assert await _reset_tokens(app) == tokens

    confirmed = await client.post(
        "/api/v1/auth/password-reset/confirm", json={"token": TOKEN, "new_password": NEW_PASSWORD}
    )
    assert confirmed.status_code == 204, confirmed.text
