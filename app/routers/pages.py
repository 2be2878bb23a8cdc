"""The two pages that the default email links open: ``/account/reset-password`` and
``/account/verify-email``, so a deployment without a frontend works.

Opening a page never uses the token (mail scanners and link previews open links): the HTML
is the same whatever the query string holds and the handlers read nothing from it. The
page's script (a local file: the Content-Security-Policy allows no inline script or style)
takes the token from the address, removes it from the address bar, and sends it only when
the user presses the button.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from app.resources import resources_of
from app.routers import API_PREFIX

RESET_PASSWORD_PATH = "/account/reset-password"  # noqa: S105 (a path)
VERIFY_EMAIL_PATH = "/account/verify-email"
ASSETS_URL = "/account-assets"
ASSETS_DIR = Path(__file__).resolve().parent.parent / "static" / "account"

CONFIRM_RESET_API = f"{API_PREFIX}/auth/password-reset/confirm"
VERIFY_EMAIL_API = f"{API_PREFIX}/auth/verify-email"

# Scripts and styles only from the service's own files, requests only to the service, no
# form submission by the browser (the script sends the form), no framing, no <base>.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    # The token is in the page's address: no Referer may carry it anywhere.
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}

_LAYOUT = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>{title} - {service}</title>
<link rel="icon" href="{assets}/favicon.svg">
<link rel="stylesheet" href="{assets}/account.css">
<script src="{assets}/account.js" defer></script>
</head>
<body data-page="{page}" data-endpoint="{endpoint}">
<main>
<p class="service">{service}</p>
<h1>{title}</h1>
<noscript><p class="message error">This page needs JavaScript.</p></noscript>
<p id="message" class="message" role="status" aria-live="polite" hidden></p>
<ul id="problems" class="problems" hidden></ul>
{content}
</main>
</body>
</html>
"""

_RESET_FORM = """<form id="form" hidden novalidate>
<p>Choose a new password for your account.</p>
<label for="new-password">New password</label>
<input id="new-password" name="new_password" type="password" autocomplete="new-password"
 minlength="8" maxlength="128" required>
<label for="confirm-password">Repeat the new password</label>
<input id="confirm-password" name="confirm_password" type="password"
 autocomplete="new-password" minlength="8" maxlength="128" required>
<p class="hint">8 to 128 characters, not entirely numeric, not a common password, not too
 similar to your username, email or name.</p>
<button id="submit" type="submit">Set the new password</button>
</form>
"""

_VERIFY_FORM = """<form id="form" hidden novalidate>
<p>Confirm that this email address is yours.</p>
<button id="submit" type="submit">Verify my email</button>
</form>
"""


@dataclass(frozen=True)
class _Page:
    name: str  # the route's name, and data-page for the script
    title: str
    endpoint: str  # the API operation the button calls
    content: str


_PAGES = {
    RESET_PASSWORD_PATH: _Page(
        "reset-password", "Reset your password", CONFIRM_RESET_API, _RESET_FORM
    ),
    VERIFY_EMAIL_PATH: _Page("verify-email", "Verify your email", VERIFY_EMAIL_API, _VERIFY_FORM),
}

router = APIRouter(include_in_schema=False)


def _render(request: Request, page: _Page) -> HTMLResponse:
    """The page, the same whatever the query string holds (the token is the script's)."""
    root: str = request.scope.get("root_path", "")
    service = resources_of(request.app).settings.service_name
    html = _LAYOUT.format(
        title=escape(page.title),
        service=escape(service),
        assets=escape(f"{root}{ASSETS_URL}"),
        page=page.name,
        endpoint=escape(f"{root}{page.endpoint}"),
        content=page.content,
    )
    return HTMLResponse(html, headers=PAGE_HEADERS)


def _add_page(path: str, page: _Page) -> None:
    async def handler(request: Request) -> HTMLResponse:
        return _render(request, page)

    router.add_api_route(
        path,
        handler,
        methods=["GET"],
        name=f"{page.name.replace('-', '_')}_page",
        response_class=HTMLResponse,
    )


for _path, _page in _PAGES.items():
    _add_page(_path, _page)


def install_pages(app: FastAPI) -> None:
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS_DIR), name="account-assets")
    app.include_router(router)
