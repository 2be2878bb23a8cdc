"""The domain errors: what services, repositories and core raise, as plain Python.

No framework here (no FastAPI, Starlette, SQLAlchemy or asyncpg; tests/test_error_docs.py
checks): `app.core.http_errors` renders these as ``{"detail", "code"}`` responses, and
`app.routers.responses` documents them per route.

Each kind carries, as plain data, what the HTTP layer needs: its stable ``code``, its
default ``detail``, its ``status_code``, the ``headers`` it must be answered with, and
``keeps_changes``. The status stays on the class rather than in a mapping table beside the
handlers: it is part of what the error means in this API (DESIGN.md lists the statuses by
kind), a subclass inherits it (every `NotAuthenticated` is a 401), and one table more would
have to be kept in step with the hierarchy, with a silent 500 for a forgotten entry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Self

# RFC 6750 section 3: the bare challenge when no bearer credentials came with the request
# (no header, another scheme, a token without its scheme); with ``error`` when one did.
BEARER_CHALLENGE = MappingProxyType({"WWW-Authenticate": "Bearer"})
# error_description's allowed characters (RFC 6750 section 3): no quote, no backslash.
_UNQUOTABLE = str.maketrans({'"': "'", "\\": "/"})


def bearer_challenge(error: str, description: str) -> Mapping[str, str]:
    """``WWW-Authenticate: Bearer error="...", error_description="..."``."""
    text = "".join(c for c in description.translate(_UNQUOTABLE) if " " <= c <= "~")
    return MappingProxyType(
        {"WWW-Authenticate": f'Bearer error="{error}", error_description="{text}"'}
    )


class AppError(Exception):
    """An error the API answers on purpose. Services raise these; they know nothing of HTTP
    beyond the status each kind maps to."""

    status_code: int = 400
    code: str = "bad_request"
    detail: str = "Bad request"
    headers: Mapping[str, str] | None = None
    # Members of the JSON body beside "detail" and "code" (e.g. the ``mfa_token``), and
    # their names and descriptions for the schema.
    extra: Mapping[str, str] | None = None
    extra_fields: Mapping[str, str] = MappingProxyType({})
    # True when the request's database changes must be committed although it fails
    # (e.g. revoking a token family on refresh-token reuse).
    keeps_changes: bool = False

    def __init__(self, detail: str | None = None) -> None:
        if detail is not None:
            self.detail = detail
        super().__init__(self.detail)

    def keeping_changes(self) -> Self:
        """This occurrence commits the request's changes although it fails: a failed login
        changes nothing but its audit event, which must be kept."""
        self.keeps_changes = True
        return self


class NotAuthenticated(AppError):
    """401. Without ``bearer_error``: no bearer token came with the request (no header,
    another scheme, a token without "Bearer "), answered with the bare challenge; with it,
    a token came and is refused, and the challenge says so (RFC 6750 section 3.1)."""

    status_code = 401
    code = "not_authenticated"
    detail = "Not authenticated: send the access token as 'Authorization: Bearer <token>'"
    headers: Mapping[str, str] | None = BEARER_CHALLENGE
    bearer_error: str | None = None

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail)
        if self.bearer_error is not None:
            self.headers = bearer_challenge(self.bearer_error, self.detail)


class InvalidToken(NotAuthenticated):
    """Malformed, forged, of the wrong type (a refresh token as an access token), signed
    with an unknown key, or a claim that does not check out: log in again."""

    code = "invalid_token"
    detail = "Invalid token: log in again"
    bearer_error = "invalid_token"


class TokenExpired(InvalidToken):
    """A token of ours that checks out in every respect but ``exp``, which is past: for an
    access token, renew it with the refresh token (POST /api/v1/auth/token/refresh); for a
    refresh token, log in again. Only after the signature, the key, the type and every other
    claim are verified, so a forged or wrongly typed token is never told it merely expired.
    The replaced Django service's tokens stay `InvalidToken` when expired: their refresh
    tokens are not accepted here, so only a new login helps."""

    code = "token_expired"
    detail = "The access token has expired: get a new one with the refresh token"


class SessionRevoked(NotAuthenticated):
    code = "session_revoked"
    detail = "Session has ended; log in again"
    bearer_error = "invalid_token"


class RefreshTokenReused(NotAuthenticated):
    code = "refresh_token_reused"
    detail = "Refresh token was already used; every token of this session is now revoked"
    keeps_changes = True
    bearer_error = "invalid_token"


class InactiveUser(NotAuthenticated):
    code = "inactive_user"
    detail = "User account is disabled"
    bearer_error = "invalid_token"


class InvalidCredentials(NotAuthenticated):
    code = "invalid_credentials"
    detail = "Incorrect username or password"


class InvalidResetToken(AppError):
    """A link's token (password reset, email verification) that is unknown, used,
    superseded or expired, or (verification) was sent to an address the account no longer
    has.

    The same code as the bearer token's `InvalidToken`, at 400 instead of 401 (issue 12's
    contract): the request is not unauthenticated, its body holds a bad value, and a 401
    with ``WWW-Authenticate: Bearer`` would tell clients to log in. The code names what is
    wrong (a token), the status where it was (body, or the Authorization header); on any
    one route a code still has one status (tests/test_error_docs.py)."""

    status_code = 400
    code = "invalid_token"
    detail = "The link is invalid or has expired; ask for a new one"


class UserNotFound(AppError):
    status_code = 404
    code = "user_not_found"
    detail = "User not found"


class AuthSessionNotFound(AppError):
    status_code = 404
    code = "session_not_found"
    detail = "No such session"


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


class EmailNotVerified(AppError):
    """The right password of an account whose address is unverified, while
    REQUIRE_VERIFIED_EMAIL is on (a wrong password stays 401: only who knows the password
    learns that the account exists and waits for verification)."""

    status_code = 403
    code = "email_not_verified"
    detail = "Confirm your email address first: follow the link sent to it, or ask for a new one"


class MfaRequired(AppError):
    """The right password of an account with a second factor: the client goes on with the
    ``mfa_token`` at ``POST /auth/token/mfa``."""

    status_code = 403
    code = "mfa_required"
    detail = "Enter the code of your authenticator app (or a recovery code) to finish signing in"
    extra_fields = MappingProxyType(
        {"mfa_token": "Send it with the code to POST /api/v1/auth/token/mfa (5 minutes, once)."}
    )

    def __init__(self, mfa_token: str) -> None:
        super().__init__()
        self.extra = {"mfa_token": mfa_token}


class InvalidMfaToken(NotAuthenticated):
    code = "invalid_mfa_token"
    detail = "The sign-in has expired, was finished, or had too many wrong codes: log in again"
    bearer_error = "invalid_token"


class InvalidCode(AppError):
    status_code = 400
    code = "invalid_code"
    detail = "The code is wrong, expired or already used"


class MfaAlreadyEnabled(AppError):
    status_code = 409
    code = "mfa_already_enabled"
    detail = "Two-factor sign-in is already on: turn it off first to enrol a new device"


class MfaNotEnabled(AppError):
    status_code = 409
    code = "mfa_not_enabled"
    detail = "Two-factor sign-in is not on for this account"


class MfaNotPending(AppError):
    status_code = 409
    code = "mfa_not_pending"
    detail = "No enrolment to confirm: start one with POST /api/v1/users/profile/mfa/totp"


class MfaUnavailable(AppError):
    status_code = 503
    code = "mfa_unavailable"
    detail = "Two-factor sign-in is not configured on this server (DATA_ENCRYPTION_KEY)"


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
    detail = "Content-Type 'text/plain' is not accepted here: send the body as application/json"


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
