"""Pure ASGI middleware (no BaseHTTPMiddleware: it buffers and costs per request)."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Mapping

from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core import metrics
from app.core.http_errors import RequestTooLarge
from app.core.logging import REQUEST_LOGGER, request_id_var

BODY_TOO_LARGE_CODE = RequestTooLarge.code
REQUEST_ID_HEADER = "X-Request-ID"
# A client's request id is kept when it is short and made of safe characters (it ends up in
# logs and headers); anything else is replaced by a generated one.
_SAFE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,64}")
USER_ID_STATE = "user_id"  # set in scope["state"] by the current-user dependency

request_logger = logging.getLogger(REQUEST_LOGGER)


class BodyTooLarge(HTTPException):
    """Raised from ``receive``; an HTTPException so FastAPI's body parsing re-raises it
    (anything else becomes a 400) and the app's error handler renders it."""

    code = BODY_TOO_LARGE_CODE

    def __init__(self, max_bytes: int) -> None:
        super().__init__(status_code=413, detail=f"Request body exceeds {max_bytes} bytes")


class BodySizeLimitMiddleware:
    """413 for bodies over ``max_bytes``: refused from Content-Length before reading, or as
    soon as a streamed body passes the limit, never read further.

    ``path_limits`` gives particular paths (relative to the root path) their own limit,
    larger or smaller than the default: the avatar upload accepts AVATAR_MAX_BYTES plus the
    multipart framing, every other route keeps MAX_BODY_BYTES.
    """

    def __init__(
        self, app: ASGIApp, max_bytes: int, path_limits: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.path_limits = dict(path_limits or {})

    def limit_for(self, scope: Scope) -> int:
        path: str = scope["path"]
        root_path: str = scope.get("root_path", "")
        if root_path and path.startswith(root_path):
            path = path[len(root_path) :]
        return self.path_limits.get(path, self.max_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.limit_for(scope)
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit() or int(value) > max_bytes:
                    await _send_too_large(send, max_bytes)
                    return
                break

        received = 0
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    raise BodyTooLarge(max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if response_started:
                raise
            await _send_too_large(send, max_bytes)


async def _send_too_large(send: Send, max_bytes: int) -> None:
    body = json.dumps(
        {"detail": BodyTooLarge(max_bytes).detail, "code": BODY_TOO_LARGE_CODE}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class SecurityHeadersMiddleware:
    """nosniff and no-referrer on every response; ``Cache-Control: no-store`` on the API,
    whose answers are tokens and personal data."""

    def __init__(self, app: ASGIApp, no_store_prefix: str) -> None:
        self.app = app
        self.no_store_prefix = no_store_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        no_store = scope["path"].startswith(self.no_store_prefix)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["X-Content-Type-Options"] = "nosniff"
                headers["Referrer-Policy"] = "no-referrer"
                if no_store:
                    headers["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)


class RequestLogMiddleware:
    """Per request: an ``X-Request-ID`` (the client's when safe, else generated) on the
    response and on every log record of the request; one JSON log line (method, route
    template, status, duration, user id when known) and the request metrics.

    Only the route template (``scope["route"].path``, set by routing) is recorded, never the
    path, query string, headers or body: no token or password can reach the log this way.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _request_id(scope)
        token = request_id_var.set(request_id)
        state: dict[str, object] = scope.setdefault("state", {})
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", None) or metrics.UNMATCHED_ROUTE
            method: str = scope["method"]
            metrics.observe_request(route, method, status, seconds)
            request_logger.info(
                "%s %s %d",
                method,
                route,
                status,
                extra={
                    "fields": {
                        "method": method,
                        "route": route,
                        "status": status,
                        "duration_ms": round(seconds * 1000, 2),
                        "user_id": state.get(USER_ID_STATE),
                    }
                },
            )
            request_id_var.reset(token)


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            if _SAFE_REQUEST_ID.fullmatch(value):
                client_id: str = value.decode("ascii")
                return client_id
            break
    return uuid.uuid4().hex
