"""/docs in a real browser (headless Debian chromium driven by Playwright), with every
request to another host refused: the page must work on a closed network.

Skipped when chromium or Playwright is missing, except under USERSERVICE_REQUIRE_BROWSER=1
(CI: .ci/run installs chromium), where that is a failure. Playwright drives the system
chromium; it never downloads a browser of its own.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import PASSWORD, run_server, user_payload

# Real servers, processes or fuzzing: `make test-fast` leaves these out.
pytestmark = pytest.mark.slow

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


def _unavailable(reason: str) -> None:
    if REQUIRE_BROWSER:
        pytest.fail(f"{reason} (USERSERVICE_REQUIRE_BROWSER=1)")
    pytest.skip(reason)


def test_docs_render_authorize_and_execute_the_profile_offline(tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        _unavailable(f"no chromium at {CHROMIUM}")
    try:
        from playwright.sync_api import Route, sync_playwright
    except ImportError:
        _unavailable("playwright is not installed")

    database_url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite3'}"
    with run_server(database_url, tmp_path) as base_url:
        registered = httpx.post(f"{base_url}/api/v1/auth/register", json=user_payload())
        assert registered.status_code == 201, registered.text
        local = urlsplit(base_url).netloc
        outside: list[str] = []

        def only_local(route: Route) -> None:
            if urlsplit(route.request.url).netloc == local:
                route.continue_()
            else:
                outside.append(route.request.url)
                route.abort()

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
            )
            try:
                page = browser.new_page()
                page.set_default_timeout(TIMEOUT_MS)
                page.route("**/*", only_local)
                page.goto(f"{base_url}/docs")

                profile = page.locator("#operations-users-get_profile")
                profile.wait_for()
                assert page.locator(".opblock").count() >= 15  # every operation rendered

                page.locator("button.authorize").first.click()
                page.fill("#oauth_username", "alice")
                page.fill("#oauth_password", PASSWORD)
                page.locator(".auth-container button.modal-btn.authorize").click()
                dialog = page.locator(".dialog-ux")
                dialog.locator("button.authorize", has_text="Logout").wait_for()  # authorized
                dialog.locator("button.btn-done").click()

                profile.locator(".opblock-summary").click()
                profile.locator("button.try-out__btn").click()
                profile.locator("button.execute").click()
                answer = profile.locator(".live-responses-table tr.response").first
                status = answer.locator(".response-col_status")
                status.wait_for()
                assert status.inner_text().strip() == "200"
                text = answer.locator(".response-col_description").inner_text()
                for field in ('"username": "alice"', '"email": "alice@example.com"', '"id"'):
                    assert field in text, text
            finally:
                browser.close()
        assert outside == [], f"requests to other hosts: {outside}"
