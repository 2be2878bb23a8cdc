"""Domain errors and the handlers that render every error as ``{"detail", "code"}``."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from http import HTTPStatus
from types import MappingProxyType
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger("app.errors")

BEARER_CHALLENGE = MappingProxyType({"WWW-Authenticate": "Bearer"})
UNEXPECTED_ERROR_HEADERS = MappingProxyType(
    {
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }
)


class AppError(Exception):
    """An error the API answers on purpose. Services raise these; they know nothing of HTTP
    beyond the status each kind maps to."""

    status_code: int = 400
    code: str = "bad_request"
    detail: str = "Bad request"
    headers: Mapping[str, str] | None = None
    # True when the request's database changes must be committed although it fails
    # (e.g. revoking a token family on refresh-token reuse).
    keeps_changes: bool = False

    def __init__(self, detail: str | None = None) -> None:
        if detail is not None:
            self.detail = detail
        super().__init__(self.detail)


class NotAuthenticated(AppError):
    status_code = 401
    code = "not_authenticated"
    detail = "Not authenticated"
    headers = BEARER_CHALLENGE


class InvalidToken(NotAuthenticated):
    code = "invalid_token"
    detail = "Invalid or expired token"


class SessionRevoked(NotAuthenticated):
    code = "session_revoked"
    detail = "Session has ended; log in again"


class RefreshTokenReused(NotAuthenticated):
    code = "refresh_token_reused"
    detail = "Refresh token was already used; every token of this session is now revoked"
    keeps_changes = True


class InactiveUser(NotAuthenticated):
    code = "inactive_user"
    detail = "User account is disabled"


class InvalidCredentials(NotAuthenticated):
    code = "invalid_credentials"
    detail = "Incorrect username or password"


class UserNotFound(AppError):
    status_code = 404
    code = "user_not_found"
    detail = "User not found"


class NoPublicKeys(AppError):
    status_code = 404
    code = "no_public_keys"
    detail = "Tokens are signed with a shared secret (HS*): there are no public keys"


class UsernameTaken(AppError):
    status_code = 409
    code = "username_taken"
    detail = "A user with that username already exists"


class EmailTaken(AppError):
    status_code = 409
    code = "email_taken"
    detail = "A user with that email already exists"


class PermissionDenied(AppError):
    status_code = 403
    code = "permission_denied"
    detail = "You do not have permission to perform this action"


class InvalidCurrentPassword(AppError):
    status_code = 403
    code = "invalid_current_password"
    detail = "The current password is incorrect"


class LastSuperuser(AppError):
    status_code = 409
    code = "last_superuser"
    detail = "The last active superuser cannot be deactivated, demoted or deleted"


class MediaNotFound(AppError):
    status_code = 404
    code = "not_found"
    detail = "Not Found"


class FileTooLarge(AppError):
    status_code = 413
    code = "file_too_large"

    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"The file exceeds {max_bytes} bytes")


class UnsupportedMediaType(AppError):
    status_code = 415
    code = "unsupported_media_type"
    detail = "Send application/json or application/x-www-form-urlencoded"


class TooManyRequests(AppError):
    status_code = 429
    code = "too_many_requests"
    detail = "Too many attempts; try again later"

    def __init__(self, retry_after: int) -> None:
        super().__init__()
        self.headers = {"Retry-After": str(max(1, retry_after))}


class ServiceUnavailable(AppError):
    status_code = 503
    code = "service_unavailable"
    detail = "A backing service is unavailable; try again shortly"
    headers = MappingProxyType({"Retry-After": "5"})


class FieldRejected(AppError):
    """A field broke a rule checked outside the schema; rendered like any other 422 on it:
    ``detail`` is a list of ``{type, loc: ["body", field], msg}``."""

    status_code = 422
    code = "validation_error"

    def __init__(self, problems: Sequence[tuple[str, str]], field: str) -> None:
        self.problems = list(problems)
        self.field = field
        super().__init__("; ".join(message for _, message in self.problems))


class PasswordRejected(FieldRejected):
    """The password breaks a password rule."""

    def __init__(self, problems: Sequence[tuple[str, str]], field: str = "password") -> None:
        super().__init__(problems, field)


class InvalidImage(FieldRejected):
    """The uploaded file is not an acceptable image (type, size in pixels, corrupt)."""

    def __init__(self, problem: str, message: str, field: str = "file") -> None:
        super().__init__([(problem, message)], field)


def _error_body(detail: Any, code: str) -> dict[str, Any]:
    return {"detail": detail, "code": code}


def _code_for_status(status_code: int) -> str:
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
    return JSONResponse(
        _error_body(detail, exc.code), status_code=exc.status_code, headers=exc.headers
    )


async def _http_exception_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return JSONResponse(
        _error_body(exc.detail, getattr(exc, "code", None) or _code_for_status(exc.status_code)),
        status_code=exc.status_code,
        headers=exc.headers,
    )


async def _validation_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse(
        _error_body(_safe_validation_errors(exc.errors()), "validation_error"), status_code=422
    )


async def _unexpected_error_handler(request: Request, exc: Exception) -> JSONResponse:
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    # Starlette renders this outside the app's middleware: add the security headers here.
    return JSONResponse(
        _error_body("Internal server error", "internal_error"),
        status_code=500,
        headers=UNEXPECTED_ERROR_HEADERS,
    )


# asyncpg errors that mean "the database cannot be reached or is going away", not "this
# statement is wrong": connection failures and closed connections, server shutdown or
# cancelled statements (statement_timeout), too many connections.
_ASYNCPG_UNAVAILABLE: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
)
_DATABASE_MODULES = ("sqlalchemy.", "asyncpg.", "aiosqlite.")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _raised_by_database_layer(exc: BaseException) -> bool:
    traceback = exc.__traceback__
    while traceback is not None:
        module = traceback.tb_frame.f_globals.get("__name__", "")
        if isinstance(module, str) and module.startswith(_DATABASE_MODULES):
            return True
        traceback = traceback.tb_next
    return False


def is_database_unavailable(exc: BaseException) -> bool:
    """True when ``exc`` means the database is unreachable (down, cut off, timing out, out
    of connections), as opposed to a bug or a refused statement."""
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated or isinstance(
            exc, sa_exc.OperationalError | sa_exc.InterfaceError
        ):
            return True
        return any(isinstance(item, _ASYNCPG_UNAVAILABLE) for item in _chain(exc))
    if isinstance(exc, sa_exc.TimeoutError):  # no pooled connection within DB_POOL_TIMEOUT
        return True
    if isinstance(exc, _ASYNCPG_UNAVAILABLE):
        return True
    # OSError covers ConnectionError and TimeoutError (asyncpg's connect and command
    # timeouts): a database outage only when raised from the database drivers.
    return isinstance(exc, OSError) and _raised_by_database_layer(exc)


async def _database_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """The one place database outages become 503 + Retry-After. The session dependency has
    already rolled back, so nothing of the request was written."""
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
    for exc_class in (sa_exc.SQLAlchemyError, OSError, *_ASYNCPG_UNAVAILABLE):
        app.add_exception_handler(exc_class, _database_error_handler)
    app.add_exception_handler(StarletteHTTPException, _http_exception_handler)
    app.add_exception_handler(RequestValidationError, _validation_error_handler)
    app.add_exception_handler(Exception, _unexpected_error_handler)
