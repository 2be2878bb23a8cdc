"""/docs in a real browser (headless Debian chromium driven by Playwright), with every
request to another host refused: the page must work on a closed network.

The browser is set up by tests/browser.py (skipped without chromium, unless required).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.browser import browser_or_skip, chromium, local_page
from tests.conftest import PASSWORD, run_server, user_payload

# Real servers, processes or fuzzing: `make test-fast` leaves these out.
pytestmark = pytest.mark.slow


def test_docs_render_authorize_and_execute_the_profile_offline(tmp_path: Path) -> None:
    browser_or_skip()
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite3'}"
    with run_server(database_url, tmp_path) as base_url:
        registered = httpx.post(f"{base_url}/api/v1/auth/register", json=user_payload())
        assert registered.status_code == 201, registered.text
        outside: list[str] = []
        with chromium() as browser:
            page = local_page(browser, base_url, outside)
            page.goto(f"{base_url}/docs")

            profile = page.locator("#operations-users-get_profile")
            profile.wait_for()
            assert page.locator(".opblock").count() >= 15  # every operation rendered
            # The auth operations come first (OPENAPI_TAGS).
            assert page.locator("h3.opblock-tag").first.get_attribute("data-tag") == "auth"

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
        assert outside == [], f"requests to other hosts: {outside}"
