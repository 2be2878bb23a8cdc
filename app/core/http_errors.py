"""The HTTP side of the errors: every error answered as ``{"detail", "code"}``.

`app.core.errors` holds the domain errors, as plain data; this module maps them, and what
the framework and the database raise, onto responses (`install_error_handlers`). It also
names, as `AppError` kinds, the errors the framework answers by itself (an unparsable or
invalid request, a body over the limit, a bug, an unknown route), so that their codes are
documented like the others (`app.routers.responses`) and written in one place.

It sits in ``app/core`` beside the rest of the HTTP plumbing (the middleware, the uvicorn
protocol), not in ``app/routers``: the app factory installs it, and core modules use its
constants (the 413's code, the 500's headers), which must not import from the routers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from http import HTTPStatus
from types import MappingProxyType
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from app.core.db_errors import (
    DATABASE_ERROR_TYPES,
    is_database_unavailable,
    is_transient_conflict,
)
from app.core.errors import AppError, FieldRejected, ServiceUnavailable

logger = logging.getLogger("app.errors")

UNEXPECTED_ERROR_HEADERS = MappingProxyType(
    {
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }
)


# The errors the framework answers: never raised by the service's own code, named here so
# that every code the API can answer belongs to an `AppError` kind.


class MalformedBody(AppError):
    """FastAPI could not parse the body (e.g. malformed multipart)."""

    status_code = 400
    code = "bad_request"
    detail = "There was an error parsing the body"


class InvalidRequest(AppError):
    """The request does not match its schema (body, query or path); ``detail`` is the list
    of problems (`_safe_validation_errors`)."""

    status_code = 422
    code = "validation_error"
    detail = "Invalid input"


class RequestTooLarge(AppError):
    """The body is over MAX_BODY_BYTES (`app.core.middleware.RequestMiddleware`)."""

    status_code = 413
    code = "request_too_large"
    detail = "Request body is too large"


class InternalError(AppError):
    """A bug: a generic body, the detail only in the log."""

    status_code = 500
    code = "internal_error"
    detail = "Internal server error"
    headers = UNEXPECTED_ERROR_HEADERS


class RouteNotFound(AppError):
    """No route has this path (not route-facing: no operation documents it)."""

    status_code = 404
    code = "not_found"
    detail = "Not Found"


class MethodNotAllowed(AppError):
    """The path exists, not with this method (not route-facing)."""

    status_code = 405
    code = "method_not_allowed"
    detail = "Method Not Allowed"


class RequestHeadersTooLarge(AppError):
    """The request head is over MAX_REQUEST_HEADER_BYTES, refused by uvicorn's protocol
    (`app.core.http_protocol`) before the app sees it (not route-facing)."""

    status_code = 431
    code = "request_header_fields_too_large"
    detail = "Request header fields are too large"


# Errors no operation documents: they come before a route is matched.
NOT_ROUTE_FACING: tuple[type[AppError], ...] = (
    RouteNotFound,
    MethodNotAllowed,
    RequestHeadersTooLarge,
)

# The code of an HTTPException the framework raises, by status; other statuses get one made
# from the status phrase. (The 413 of the body limit carries its own ``code``.)
_FRAMEWORK_CODES = {
    kind.status_code: kind.code for kind in (MalformedBody, RouteNotFound, MethodNotAllowed)
}


def _error_body(detail: Any, code: str) -> dict[str, Any]:
    return {"detail": detail, "code": code}


def _code_for_status(status_code: int) -> str:
    if status_code in _FRAMEWORK_CODES:
        return _FRAMEWORK_CODES[status_code]
    try:
        return HTTPStatus(status_code).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "error"


def _safe_validation_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """FastAPI's 422 list without ``input`` (it may be a password) and with a plain ``ctx``."""
    cleaned: list[dict[str, Any]] = []
    for error in errors:
        item: dict[str, Any] = {
            "type": error.get("type", "value_error"),
            "loc": list(error.get("loc", ())),
            "msg": error.get("msg", "Invalid value"),
        }
        ctx = error.get("ctx")
        if ctx:
            item["ctx"] = {
                key: value if isinstance(value, int | float | str | bool) else str(value)
                for key, value in ctx.items()
                if key != "error"
            }
        cleaned.append(item)
    return cleaned


async def _app_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    if isinstance(exc, FieldRejected):
        detail: Any = [
            {"type": code, "loc": ["body", exc.field], "msg": message}
            for code, message in exc.problems
        ]
    else:
        detail = exc.detail
    body = _error_body(detail, exc.code)
    if exc.extra:
        body.update(exc.extra)
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def _allowed_methods(request: Request) -> str | None:
    """Every method the path supports, for a 405's ``Allow``.

    Starlette answers 405 from the first route whose path matches, with that route's methods
    only (``PUT /users/profile`` said ``Allow: POST`` though GET, PATCH and DELETE exist): the
    methods of all the app's routes matching the path are gathered here instead."""
    methods: set[str] = set()
    routes = request.app.router.routes
    for method in _METHODS:
        # Asking each route whether it fully matches the path under every method keeps to
        # the routes' public `matches` (included routers are not flattened in app.routes).
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] is Match.FULL for route in routes):
            methods.add(method)
    return ", ".join(sorted(methods)) or None


async def _http_exception_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    headers = exc.headers
    detail = exc.detail
    if exc.status_code == MethodNotAllowed.status_code:
        if allow := _allowed_methods(request):
            headers = {**(headers or {}), "Allow": allow}
        if request.method == "OPTIONS" and "access-control-request-method" in request.headers:
            # A browser's CORS preflight reaches the routes only when CORS is off.
            detail = f"{detail}: a CORS preflight; to allow this origin, add it to CORS_ORIGINS"
    return JSONResponse(
        _error_body(detail, getattr(exc, "code", None) or _code_for_status(exc.status_code)),
        status_code=exc.status_code,
        headers=headers,
    )


async def _validation_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse(
        _error_body(_safe_validation_errors(exc.errors()), InvalidRequest.code),
        status_code=InvalidRequest.status_code,
    )


async def _unexpected_error_handler(request: Request, exc: Exception) -> JSONResponse:
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    # Starlette renders this outside the app's middleware: add the security headers here.
    return JSONResponse(
        _error_body(InternalError.detail, InternalError.code),
        status_code=InternalError.status_code,
        headers=InternalError.headers,
    )


async def _database_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """The one place database outages become 503 + Retry-After. The session dependency has
    already rolled back, so nothing of the request was written. A transaction PostgreSQL
    aborted because of concurrent ones (a deadlock victim) is answered the same way: the
    request can be sent again as it is."""
    if is_transient_conflict(exc):
        logger.warning(
            "database conflict on %s %s: %s",
            request.method,
            request.url.path,
            type(exc).__name__,
        )
        return await _app_error_handler(
            request, ServiceUnavailable("Concurrent changes collided in the database; try again")
        )
    if not is_database_unavailable(exc):
        return await _unexpected_error_handler(request, exc)
    logger.warning(
        "database unavailable on %s %s: %s",
        request.method,
        request.url.path,
        type(exc).__name__,
    )
    return await _app_error_handler(request, ServiceUnavailable("The database is unavailable"))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error_handler)
    for exc_class in DATABASE_ERROR_TYPES:
        app.add_exception_handler(exc_class, _database_error_handler)
    app.add_exception_handler(StarletteHTTPException, _http_exception_handler)
    app.add_exception_handler(RequestValidationError, _validation_error_handler)
    app.add_exception_handler(Exception, _unexpected_error_handler)
