"""Headless Debian chromium driven by Playwright, for the tests of the pages the service
serves (/docs, the pages of the email links).

A test that needs the browser calls ``browser_or_skip()``: skipped when chromium or
Playwright is missing, except under USERSERVICE_REQUIRE_BROWSER=1 (CI: .ci/run installs
chromium), where that is a failure. Playwright drives the system chromium; it never
downloads a browser of its own.
"""

from __future__ import annotations

import email
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import run_server, user_payload

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = Path(os.environ.get("USERSERVICE_CHROMIUM", "/usr/bin/chromium"))
REQUIRE_BROWSER = os.environ.get("USERSERVICE_REQUIRE_BROWSER") == "1"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 60_000  # a loaded 2-core machine
DATABASE = "db.sqlite3"
MAIL_DIR = "mail"


def _unavailable(reason: str) -> None:
    if REQUIRE_BROWSER:
        pytest.fail(f"{reason} (USERSERVICE_REQUIRE_BROWSER=1)")
    pytest.skip(reason)


def browser_or_skip() -> None:
    """Skip (or fail, when the browser is required) unless chromium and Playwright are here."""
    if not CHROMIUM.exists():
        _unavailable(f"no chromium at {CHROMIUM}")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _unavailable("playwright is not installed")


@contextmanager
def chromium() -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            browser.close()


def local_page(browser: Browser, base_url: str, outside: list[str]) -> Page:
    """A new page that may reach only ``base_url``'s host: every other request is refused
    and its URL appended to ``outside``."""
    from playwright.sync_api import Route

    local = urlsplit(base_url).netloc

    def only_local(route: Route) -> None:
        if urlsplit(route.request.url).netloc == local:
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page = browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.route("**/*", only_local)
    return page


def watch_console(page: Page, problems: list[str]) -> None:
    """Append to ``problems`` every Content-Security-Policy violation and every uncaught
    script error of ``page``. (Chromium also logs an API's 4xx answer as a console error:
    those are the pages' normal business, not problems.)"""
    from playwright.sync_api import ConsoleMessage, Error

    def on_console(message: ConsoleMessage) -> None:
        text = message.text
        if "Content Security Policy" in text or "Refused to" in text:
            problems.append(text)

    def on_error(error: Error) -> None:
        problems.append(f"uncaught: {error}")

    page.on("console", on_console)
    page.on("pageerror", on_error)


def wait_for_mail_token(mail_dir: Path, path: str, timeout: float = 60.0) -> str:
    """The token of the first link to ``path`` (``/account/...``) in a message that the
    file backend wrote to ``mail_dir``, waiting for the outbox relay to deliver it."""
    pattern = re.compile(re.escape(path) + r"\?token=([A-Za-z0-9_\-]+)")
    deadline = time.monotonic() + timeout
    while True:
        for eml in sorted(mail_dir.glob("*.eml")) if mail_dir.exists() else []:
            message = email.message_from_bytes(eml.read_bytes(), policy=policy.default)
            assert isinstance(message, EmailMessage)
            plain = message.get_body(("plain",))
            found = pattern.search(plain.get_content() if plain is not None else "")
            if found:
                return found.group(1)
        if time.monotonic() > deadline:
            pytest.fail(f"no email with a link to {path} in {mail_dir} after {timeout} s")
        time.sleep(0.2)


@dataclass
class WatchedBrowser:
    """Pages of one browser that may reach only the server; their CSP violations and
    script errors are collected in ``problems``, other hosts' URLs in ``outside``."""

    browser: Browser
    base_url: str
    outside: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def new_page(self) -> Page:
        page = local_page(self.browser, self.base_url, self.outside)
        watch_console(page, self.problems)
        return page


@contextmanager
def watched_browser(base_url: str) -> Iterator[WatchedBrowser]:
    """A ``WatchedBrowser``; on a clean exit, neither problems nor requests elsewhere."""
    with chromium() as browser:
        watched = WatchedBrowser(browser, base_url)
        yield watched
    assert watched.problems == [], watched.problems
    assert watched.outside == [], f"requests to other hosts: {watched.outside}"


@contextmanager
def server_with_mail(tmp_path: Path, **env: str) -> Iterator[str]:
    """``run_server`` on a SQLite database in ``tmp_path`` (``DATABASE``) whose mail the file
    backend writes to ``tmp_path / MAIL_DIR``."""
    with run_server(
        f"sqlite+aiosqlite:///{tmp_path / DATABASE}",
        tmp_path,
        EMAIL_BACKEND="file",
        EMAIL_FILE_DIR=str(tmp_path / MAIL_DIR),
        **env,
    ) as base_url:
        yield base_url


def register_user(base_url: str) -> dict[str, Any]:
    """Alice, registered over HTTP: her registration payload."""
    user = user_payload()
    registered = httpx.post(f"{base_url}/api/v1/auth/register", json=user)
    assert registered.status_code == 201, registered.text
    return user


def expect_missing_token_message(page: Page, url: str) -> None:
    """``url`` (a page without a token) says that the link is missing and offers no form."""
    page.goto(url)
    page.locator("#message.error").wait_for()
    assert "missing here" in page.locator("#message").inner_text()
    assert page.locator("#form").is_hidden()
