"""The password-reset page in a real browser (headless chromium, tests/browser.py) against
a real server whose mail goes to .eml files: opening the link uses nothing, the rule
messages of a refused password, the success, a used link, no link, a network failure; no
Content-Security-Policy violation and no request to another host on the way."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx
import pytest

from tests.browser import (
    DATABASE,
    MAIL_DIR,
    browser_or_skip,
    expect_missing_token_message,
    register_user,
    server_with_mail,
    wait_for_mail_token,
    watched_browser,
)

if TYPE_CHECKING:
    from playwright.sync_api import Request

pytestmark = pytest.mark.slow

PAGE = "/account/reset-password"
VERIFY_PAGE = "/account/verify-email"
NEW_PASSWORD = "another-Good-passphrase-42"


def _unused_tokens(database: Path) -> int:
    with sqlite3.connect(database) as connection:
        row = connection.execute(
            "SELECT count(*) FROM password_reset_tokens WHERE used_at IS NULL"
        ).fetchone()
    return int(row[0])


def test_the_reset_page_sets_a_new_password_and_opening_it_uses_nothing(
    tmp_path: Path,
) -> None:
    browser_or_skip()
    database = tmp_path / DATABASE
    with (
        server_with_mail(tmp_path, SERVICE_NAME="Acme <Accounts>") as base_url,
        watched_browser(base_url) as browser,
    ):
        user = register_user(base_url)
        asked = httpx.post(f"{base_url}/api/v1/auth/password-reset", json={"email": user["email"]})
        assert asked.status_code == 202, asked.text
        link = f"{base_url}{PAGE}?token={wait_for_mail_token(tmp_path / MAIL_DIR, PAGE)}"

        # A mail scanner opens the link first: nothing is used.
        scanner = browser.new_page()
        scanner.goto(link)
        scanner.locator("#submit").wait_for()
        assert scanner.title() == "Reset your password - Acme <Accounts>"
        assert scanner.locator(".service").inner_text() == "Acme <Accounts>"
        assert _unused_tokens(database) == 1

        page = browser.new_page()
        page.goto(link)
        page.locator("#submit").wait_for()
        assert page.url == f"{base_url}{PAGE}"  # the token left the address bar and history
        assert _unused_tokens(database) == 1

        message = page.locator("#message")
        page.fill("#new-password", NEW_PASSWORD)
        page.fill("#confirm-password", NEW_PASSWORD + "x")
        page.click("#submit")
        assert "not the same" in message.inner_text()

        # A refused password: the rules are shown, the link still works.
        page.fill("#new-password", "12345678")
        page.fill("#confirm-password", "12345678")
        page.click("#submit")
        page.locator("#problems li").first.wait_for()
        assert "not accepted" in message.inner_text()
        rules = page.locator("#problems").inner_text()
        assert "entirely numeric" in rules or "too common" in rules, rules
        assert "Value error" not in rules
        assert _unused_tokens(database) == 1

        page.fill("#new-password", NEW_PASSWORD)
        page.fill("#confirm-password", NEW_PASSWORD)
        page.click("#submit")
        page.locator("#message.success").wait_for()
        assert "Your password has been changed" in message.inner_text()
        assert page.locator("#form").is_hidden()
        assert _unused_tokens(database) == 0

        signed_in = httpx.post(
            f"{base_url}/api/v1/auth/token",
            json={"username": user["username"], "password": NEW_PASSWORD},
        )
        assert signed_in.status_code == 200, signed_in.text

        # The used link again: said so, with what to do.
        scanner.goto(link)
        scanner.fill("#new-password", NEW_PASSWORD + "2")
        scanner.fill("#confirm-password", NEW_PASSWORD + "2")
        scanner.click("#submit")
        scanner.locator("#message.error").wait_for()
        text = scanner.locator("#message").inner_text()
        assert "invalid, has expired or was already used" in text
        assert "Ask for a new password-reset email" in text
        assert scanner.locator("#form").is_hidden()

        expect_missing_token_message(scanner, f"{base_url}{PAGE}")

        # The service out of reach: the user is told to try again, the button works again.
        offline = browser.new_page()
        offline.goto(f"{base_url}{PAGE}?token=some-token")
        offline.route("**/api/v1/**", lambda route: route.abort())
        offline.fill("#new-password", NEW_PASSWORD)
        offline.fill("#confirm-password", NEW_PASSWORD)
        offline.click("#submit")
        offline.locator("#message.error").wait_for()
        assert "could not be reached" in offline.locator("#message").inner_text()
        assert offline.locator("#submit").is_enabled()

        # The policy is enforced and its violations are seen: an inline style is refused.
        with offline.expect_console_message(lambda m: "Content Security Policy" in m.text):
            offline.evaluate(
                "document.head.appendChild(Object.assign("
                "document.createElement('style'), {textContent: 'body{color:red}'}))"
            )
        browser.problems[:] = [p for p in browser.problems if "inline style" not in p]


def test_either_page_sends_the_token_only_when_the_button_is_pressed(tmp_path: Path) -> None:
    """Opening a page, loading its script and style included, calls no API; the button
    sends one POST with the token. (The verify page's answer is an error here either way:
    the token is not a real one, and before the verification branch is merged the
    endpoint does not exist.)"""
    browser_or_skip()
    cases = [
        (PAGE, "/api/v1/auth/password-reset/confirm", {"new_password": NEW_PASSWORD}),
        (VERIFY_PAGE, "/api/v1/auth/verify-email", {}),
    ]
    with server_with_mail(tmp_path) as base_url, watched_browser(base_url) as browser:
        for path, endpoint, fields in cases:
            page = browser.new_page()
            calls: list[tuple[str, str, object]] = []

            def record(request: Request, calls: list[tuple[str, str, object]] = calls) -> None:
                if "/api/" in request.url:
                    body = request.post_data
                    calls.append(
                        (request.method, urlsplit(request.url).path, body and json.loads(body))
                    )

            page.on("request", record)
            page.goto(f"{base_url}{path}?token=the-token")
            page.locator("#submit").wait_for()
            page.wait_for_load_state("networkidle")
            assert calls == []

            for value in fields.values():
                page.fill("#new-password", value)
                page.fill("#confirm-password", value)
            page.click("#submit")
            page.locator("#message.error").wait_for()
            assert calls == [("POST", endpoint, {"token": "the-token", **fields})]
