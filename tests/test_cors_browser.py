"""CORS in a real browser (headless chromium driven by Playwright): a page served from
another origin calls the API with fetch, through a preflight, and reads an exposed header.

The browser is set up by tests/browser.py (skipped without chromium, unless required).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.browser import TIMEOUT_MS, browser_or_skip, chromium
from tests.conftest import run_server, user_payload

pytestmark = pytest.mark.slow

PAGE = "<!doctype html><title>front end</title><p>another origin</p>"


@contextmanager
def front_end(root: Path) -> Iterator[str]:
    """A static page on 127.0.0.1, on a port of its own: an origin other than the API's."""
    root.mkdir()
    (root / "index.html").write_text(PAGE)
    handler = partial(SimpleHTTPRequestHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_page_on_another_origin_calls_the_api(tmp_path: Path) -> None:
    browser_or_skip()
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite3'}"
    with (
        front_end(tmp_path / "site") as origin,
        # As an operator would paste it: with a trailing slash.
        run_server(database_url, tmp_path, CORS_ORIGINS=f"{origin}/") as base_url,
        chromium() as browser,
    ):
        # A plain page: request interception (local_page) would stand between the browser
        # and its own CORS checks, which are what is tested here.
        page = browser.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(f"{origin}/index.html")
        # JSON content type: the browser sends a preflight first.
        answer: dict[str, Any] = page.evaluate(
            """async ([url, payload]) => {
                const response = await fetch(url, {
                    method: "POST",
                    headers: {"Content-Type": "application/json"},
                    body: JSON.stringify(payload),
                });
                return {
                    status: response.status,
                    requestId: response.headers.get("X-Request-ID"),
                    body: await response.json(),
                };
            }""",
            [f"{base_url}/api/v1/auth/register", user_payload()],
        )
    assert answer["status"] == 201, answer
    assert answer["requestId"], answer
    assert answer["body"]["username"] == "alice"
