"""Pure ASGI middleware (no BaseHTTPMiddleware: it buffers and costs per request)."""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import time
from collections.abc import Mapping
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core import metrics
from app.core.http_errors import RequestTooLarge
from app.core.logging import REQUEST_LOGGER, RequestLog, request_id_var

BODY_TOO_LARGE_CODE = RequestTooLarge.code
REQUEST_ID_HEADER = "X-Request-ID"
# A client's request id is kept when it is short and made of safe characters (it ends up in
# logs and headers); anything else is replaced by a generated one.
_SAFE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,64}")
USER_ID_STATE = "user_id"  # set in scope["state"] by the current-user dependency

request_log = RequestLog(logging.getLogger(REQUEST_LOGGER))


class RequestIds:
    """Generated request ids: 32 hex digits, a random prefix per process and a counter (no
    system call per request, unlike uuid4); a forked child draws its own prefix."""

    def __init__(self) -> None:
        self.reseed()

    def reseed(self) -> None:
        self.prefix = os.urandom(8).hex()
        self.counter = itertools.count()

    def new(self) -> str:
        return f"{self.prefix}{next(self.counter):016x}"


_REQUEST_IDS = RequestIds()
os.register_at_fork(after_in_child=_REQUEST_IDS.reseed)


class BodyTooLarge(HTTPException):
    """Raised from ``receive``; an HTTPException so FastAPI's body parsing re-raises it
    (anything else becomes a 400) and the app's error handler renders it."""

    code = BODY_TOO_LARGE_CODE

    def __init__(self, max_bytes: int) -> None:
        super().__init__(status_code=413, detail=f"Request body exceeds {max_bytes} bytes")


class RequestMiddleware:
    """The one layer every HTTP request passes (pure ASGI, one wrapper of ``send``).

    * **Request id**: an ``X-Request-ID`` (the client's when short and safe, else generated)
      on the response and on every log record of the request.
    * **Log line and metrics**: one JSON log line (method, route template, status, duration,
      user id when known) and the request metrics. Only the route template
      (``scope["route"].path``, set by routing) is recorded, never the path, query string,
      headers or body: no token or password can reach the log this way.
    * **Security headers**: nosniff and no-referrer on every response;
      ``Cache-Control: no-store`` on the API (``no_store_prefix``), whose answers are
      tokens and personal data.
    * **Body size limit**: 413 for bodies over ``max_bytes``: refused from Content-Length
      before reading, or (a body without one, chunked) as soon as the streamed body passes
      the limit, never read further. ``path_limits`` gives particular paths (relative to
      the root path) their own limit: the avatar upload accepts AVATAR_MAX_BYTES plus the
      multipart framing, every other route keeps MAX_BODY_BYTES.

    Every answer, a 413 of the limit included, gets the headers and is logged and counted.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        no_store_prefix: str,
        path_limits: Mapping[str, int] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.path_limits = dict(path_limits or {})
        self.no_store_prefix = no_store_prefix
        self._headers = [
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
        ]
        self._api_headers = [*self._headers, (b"cache-control", b"no-store")]
        self._names = frozenset({name for name, _ in self._headers} | {b"x-request-id"})
        self._api_names = self._names | {b"cache-control"}

    def limit_for(self, scope: Scope) -> int:
        if not self.path_limits:
            return self.max_bytes
        path: str = scope["path"]
        root_path: str = scope.get("root_path", "")
        if root_path and path.startswith(root_path):
            path = path[len(root_path) :]
        return self.path_limits.get(path, self.max_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        client_id = content_length = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                client_id = value if client_id is None else client_id
            elif name == b"content-length":
                content_length = value if content_length is None else content_length
            elif name == b"transfer-encoding":
                chunked = True
        request_id = (
            client_id.decode("ascii")
            if client_id is not None and _SAFE_REQUEST_ID.fullmatch(client_id)
            else _REQUEST_IDS.new()
        )
        token = request_id_var.set(request_id)
        state: dict[str, object] = scope.setdefault("state", {})
        no_store = scope["path"].startswith(self.no_store_prefix)
        added_names = self._api_names if no_store else self._names
        added = [
            *(self._api_headers if no_store else self._headers),
            (b"x-request-id", request_id.encode("ascii")),
        ]
        status = 500
        response_started = False
        received = 0
        max_bytes = self.limit_for(scope)

        async def send_with_headers(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                _add_headers(message, added, added_names)
            await send(message)

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    raise BodyTooLarge(max_bytes)
            return message

        try:
            if content_length is not None and (
                not content_length.isdigit() or int(content_length) > max_bytes
            ):
                await _send_too_large(send_with_headers, max_bytes)
                return
            # The body is counted as it arrives unless its length is known: without
            # Transfer-Encoding, a Content-Length within the limit (the server reads no
            # further), or none on HTTP/1, where the request has no body (RFC 9112, 6.3).
            bounded = not chunked and (
                content_length is not None or scope.get("http_version", "1.1").startswith("1")
            )
            try:
                await self.app(scope, receive if bounded else limited_receive, send_with_headers)
            except BodyTooLarge:
                if response_started:
                    raise
                await _send_too_large(send_with_headers, max_bytes)
        finally:
            seconds = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", None) or metrics.UNMATCHED_ROUTE
            method: str = scope["method"]
            metrics.observe_request(route, method, status, seconds)
            user_id: Any = state.get(USER_ID_STATE)
            request_log.write(request_id, method, route, status, round(seconds * 1000, 2), user_id)
            request_id_var.reset(token)


def _add_headers(
    message: Message, added: list[tuple[bytes, bytes]], added_names: frozenset[bytes]
) -> None:
    """``added`` set on a response start: appended, or through MutableHeaders (which
    replaces) when the response already has one of them (ASGI header names are lower
    case)."""
    headers = list(message.get("headers", ()))
    for name, _ in headers:
        if name in added_names:
            mutable = MutableHeaders(scope=message)
            for added_name, value in added:
                mutable[added_name.decode("latin-1")] = value.decode("latin-1")
            return
    headers += added
    message["headers"] = headers


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
