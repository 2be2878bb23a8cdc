"""OpenAPI error responses, generated from the error kinds each route declares.

A route lists the `AppError` kinds it can answer; the shared ones come as the tuples below,
declared once beside the dependency or mechanism that raises them::

    @router.patch("/profile", responses=error_responses(
        SIGNED_IN_ERRORS, BODY_ERRORS, THROTTLE_ERRORS,
        InvalidCurrentPassword, UsernameTaken, EmailTaken))

Each status the kinds map to becomes a documented response: the status's description (or
the route's own, from ``descriptions``) and a named body schema whose ``code`` is an enum
of exactly the codes of that route at that status. Every route can also answer 500.

The body schemas are named components, one per set of codes, named after the codes
(``UserNotFoundError``, ``EmailTakenOrUsernameTakenError``): routes with the same set share
one type, which client generators (openapi-generator, openapi-typescript) turn into one
reusable model or union of string literals, where inline schemas would give one anonymous
``{Operation}{Status}Response`` model per route and status. ``ErrorResponse`` (any code)
stays the shape they all have; 422 is always ``ValidationErrorResponse``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from pydantic import Field, create_model

from app.core.errors import (
    AppError,
    InactiveUser,
    InvalidToken,
    NotAuthenticated,
    PermissionDenied,
    ServiceUnavailable,
    SessionRevoked,
    TokenExpired,
    TooManyRequests,
    UnsupportedMediaType,
    UserNotFound,
)
from app.core.http_errors import InternalError, InvalidRequest, MalformedBody, RequestTooLarge
from app.schemas.errors import ErrorResponse, ValidationErrorResponse

ErrorKinds = type[AppError] | Iterable[type[AppError]]

# The shared error kinds, each named once.

# The request's database (`SessionDep`, `ReadSessionDep`, the current-user lookups): down,
# unreachable or too slow (`app.core.http_errors`, `app.core.db_errors`).
DATABASE_ERRORS: tuple[type[AppError], ...] = (ServiceUnavailable,)
# The bearer-token user (`CurrentUser`, `ReadCurrentUser`, and through `OwnTokenUser` the
# staff and superuser dependencies): `app.dependencies`, `services.auth_sessions`.
SIGNED_IN_ERRORS: tuple[type[AppError], ...] = (
    NotAuthenticated,
    InvalidToken,
    TokenExpired,
    SessionRevoked,
    InactiveUser,
    UserNotFound,
    *DATABASE_ERRORS,
)
# `StaffUser`, `ReadStaffUser`, `SuperUser`: signed in, and not allowed.
STAFF_ERRORS: tuple[type[AppError], ...] = (*SIGNED_IN_ERRORS, PermissionDenied)
# `ThrottleDep` (`services.throttle`): out of attempts, or its store (Redis) down.
THROTTLE_ERRORS: tuple[type[AppError], ...] = (TooManyRequests, ServiceUnavailable)
# Query or path parameters that do not validate (FastAPI).
PARAMETER_ERRORS: tuple[type[AppError], ...] = (InvalidRequest,)
# A route that reads a body: unparsable (FastAPI), over MAX_BODY_BYTES (the body limit
# middleware), of a media type it does not accept (`app.routers.content_type`), or invalid
# (FastAPI, or a rule checked by the service: `FieldRejected`).
BODY_ERRORS: tuple[type[AppError], ...] = (
    MalformedBody,
    RequestTooLarge,
    UnsupportedMediaType,
    InvalidRequest,
)
# Every route: a bug.
ALWAYS: tuple[type[AppError], ...] = (InternalError,)

_DESCRIPTIONS = {
    400: "The body could not be parsed (malformed multipart, JSON nested too deeply).",
    401: "Not authenticated. `not_authenticated`: no bearer token (no Authorization header, "
    "another scheme, or a token without `Bearer `; the challenge is a bare `Bearer`). "
    "`token_expired`: the access token checks out but has expired: renew it with the refresh "
    "token. `invalid_token` (malformed, badly signed, not an access token), `session_revoked`, "
    "`inactive_user`: log in again. Token answers carry `WWW-Authenticate: Bearer "
    'error="invalid_token", error_description="..."` (RFC 6750).',
    403: "Authenticated but not allowed.",
    404: "Not found (for an authenticated request: the token's user no longer exists).",
    409: "The username or email is already taken (`username_taken`, `email_taken`), also as "
    "another account's login identifier: a username equal to another account's email, or an "
    "email equal to another account's username, whatever the case or Unicode spelling.",
    413: "The request body is larger than MAX_BODY_BYTES.",
    415: "The body's Content-Type is not one this operation accepts (see its request body: "
    "`application/json` unless it says otherwise); the detail names those it accepts.",
    422: "Invalid input.",
    429: "Too many attempts: wait for the number of seconds in Retry-After.",
    500: "Unexpected error; details are only in the server log.",
    503: "A backing service is unavailable: the database (down, unreachable or too slow) or, "
    "where attempts are counted, the throttling store (Redis). Retry after Retry-After seconds.",
}
_CODE_DESCRIPTION = "Stable machine-readable error code."

_models: dict[tuple[str, ...], type[ErrorResponse]] = {}


def error_responses(
    *errors: ErrorKinds, descriptions: Mapping[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """The error responses of a route that can answer ``errors`` (kinds, or tuples of them);
    ``descriptions`` replaces the generic wording where a status means something particular
    on that route."""
    by_status: dict[int, set[str]] = {}
    extra_fields: dict[int, dict[str, str]] = {}
    for kind in (*_kinds(errors), *ALWAYS):
        by_status.setdefault(kind.status_code, set()).add(kind.code)
        extra_fields.setdefault(kind.status_code, {}).update(kind.extra_fields)
    descriptions = descriptions or {}
    if stray := set(descriptions) - set(by_status):
        raise ValueError(f"descriptions of statuses no declared error has: {sorted(stray)}")
    return {
        status_code: {
            "model": error_model(status_code, by_status[status_code], extra_fields[status_code]),
            "description": descriptions.get(status_code, _DESCRIPTIONS[status_code]),
        }
        for status_code in sorted(by_status)
    }


def error_model(
    status_code: int, codes: Iterable[str], extra_fields: Mapping[str, str] | None = None
) -> type[ErrorResponse | ValidationErrorResponse]:
    """The named body schema of ``codes``: ``code`` is their enum; made once per set.
    ``extra_fields`` (name: description) are optional string members some codes add."""
    key = tuple(sorted(codes))
    if status_code == InvalidRequest.status_code:
        if key != (InvalidRequest.code,):
            raise ValueError(f"a 422 has the code {InvalidRequest.code!r}, not {key}")
        return ValidationErrorResponse
    extras = dict(extra_fields or {})
    cache_key = (*key, *sorted(extras))
    if cache_key not in _models:
        example = next(
            ((code, detail) for code in key if (detail := _example_detail(code)) is not None),
            None,
        )
        fields: dict[str, Any] = {
            "detail": (str, Field(examples=[example[1]]) if example else Field()),
            "code": (
                str,
                Field(
                    description=_CODE_DESCRIPTION,
                    examples=[example[0] if example else key[0]],
                    json_schema_extra={"enum": list(key)},
                ),
            ),
        }
        for name, description in extras.items():
            fields[name] = (str | None, Field(default=None, description=description))
        _models[cache_key] = create_model(_schema_name(key), __base__=ErrorResponse, **fields)
    return _models[cache_key]


def _schema_name(codes: tuple[str, ...]) -> str:
    """``("email_taken", "username_taken")`` → ``EmailTakenOrUsernameTakenError``."""
    name = "Or".join(code.title().replace("_", "") for code in codes)
    return name if name.endswith("Error") else f"{name}Error"


def _example_detail(code: str) -> str | None:
    """The default detail of the first kind with ``code`` that has one of its own."""
    kinds = list(_subclasses(AppError))
    return next(
        (kind.detail for kind in kinds if kind.code == code and kind.detail != AppError.detail),
        None,
    )


def _subclasses(kind: type[AppError]) -> Iterator[type[AppError]]:
    for subclass in kind.__subclasses__():
        yield subclass
        yield from _subclasses(subclass)


def _kinds(errors: Iterable[ErrorKinds]) -> list[type[AppError]]:
    kinds: list[type[AppError]] = []
    for item in errors:
        if isinstance(item, type):
            kinds.append(item)
        else:
            kinds.extend(_kinds(item))
    return kinds
