"""OpenAPI descriptions of the error responses, so /docs and generated clients show them."""

from __future__ import annotations

from typing import Any

from app.schemas.errors import ErrorResponse, ValidationErrorResponse

_DESCRIPTIONS = {
    400: "The body could not be parsed (malformed multipart, JSON nested too deeply).",
    401: "Not authenticated: the bearer token is missing, malformed, badly signed, expired or "
    "not an access token, or the user is inactive.",
    403: "Authenticated but not allowed.",
    404: "Not found (for an authenticated request: the token's user no longer exists).",
    409: "The username or email is already taken (`username_taken`, `email_taken`), also as "
    "another account's login identifier: a username equal to another account's email, or an "
    "email equal to another account's username, whatever the case or Unicode spelling.",
    413: "The request body is larger than MAX_BODY_BYTES.",
    415: "Unsupported Content-Type.",
    422: "Invalid input.",
    429: "Too many attempts: wait for the number of seconds in Retry-After.",
    500: "Unexpected error; details are only in the server log.",
    503: "A backing service is unavailable: the database (down, unreachable or too slow) or, "
    "where attempts are counted, the throttling store (Redis). Retry after Retry-After seconds.",
}


def error_responses(
    *status_codes: int, descriptions: dict[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """The error responses of a route; ``descriptions`` replaces the generic wording where a
    status means something particular on that route. Every route that reads a body (413)
    can also answer 400."""
    implied = [400] if 413 in status_codes else []
    responses: dict[int | str, dict[str, Any]] = {}
    for status_code in sorted({*status_codes, *implied, 500}):
        model = ValidationErrorResponse if status_code == 422 else ErrorResponse
        description = (descriptions or {}).get(status_code, _DESCRIPTIONS[status_code])
        responses[status_code] = {"model": model, "description": description}
    return responses
