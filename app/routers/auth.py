from __future__ import annotations

from functools import partial
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from app.core.errors import (
    EmailNotVerified,
    EmailTaken,
    InactiveUser,
    InvalidCredentials,
    InvalidResetToken,
    InvalidToken,
    MfaRequired,
    PasswordRejected,
    RefreshTokenReused,
    SessionRevoked,
    TokenExpired,
    UnsupportedMediaType,
    UsernameTaken,
)
from app.dependencies import (
    ClientAddressDep,
    CurrentUser,
    OriginDep,
    PasswordHasherDep,
    ResourcesDep,
    SessionDep,
    SettingsDep,
    ThrottleDep,
    TokenCodecDep,
    origin_of,
)
from app.resources import resources_of
from app.routers import API_PREFIX, operation_id
from app.routers.content_type import MediaTypeRoute, is_json, media_type_of, unsupported
from app.routers.responses import (
    BODY_ERRORS,
    DATABASE_ERRORS,
    SIGNED_IN_ERRORS,
    THROTTLE_ERRORS,
    error_responses,
)
from app.schemas import examples
from app.schemas.auth import (
    EmailVerifyRequest,
    EmailVerifyResend,
    EmailVerifyResendAccepted,
    LoginForm,
    LoginRequest,
    LogoutRequest,
    PasswordResetAccepted,
    PasswordResetConfirm,
    PasswordResetRequest,
    RefreshRequest,
    RegisterRequest,
    Token,
)
from app.schemas.user import UserRead
from app.services import auth as auth_service
from app.services import auth_sessions, email_verification, password_reset
from app.services.auth_sessions import TokenPair

router = APIRouter(
    prefix=f"{API_PREFIX}/auth",
    tags=["auth"],
    route_class=MediaTypeRoute,
    generate_unique_id_function=operation_id,
)

_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


_REFRESH_401 = (
    "The refresh token is refused: expired (`token_expired`), malformed, badly signed or not a "
    "refresh token (`invalid_token`), spent already (`refresh_token_reused`: the session is "
    "revoked), its session ended (`session_revoked`) or the user is inactive "
    '(`inactive_user`); `WWW-Authenticate: Bearer error="invalid_token", ...`. Whatever the '
    "code: log in again."
)


def token_response(pair: TokenPair) -> Token:
    return Token(
        access_token=pair.access.token,
        refresh_token=pair.refresh.token,
        expires_in=pair.access.expires_in,
        refresh_expires_in=pair.refresh.expires_in,
    )


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    response_model=UserRead,
    responses=error_responses(
        BODY_ERRORS, DATABASE_ERRORS, THROTTLE_ERRORS, UsernameTaken, EmailTaken, PasswordRejected
    ),
    summary="Register a new user",
    description="A link to confirm the address (valid for EMAIL_VERIFY_TTL) is emailed to it.",
)
async def register(
    data: Annotated[RegisterRequest, Body(openapi_examples=examples.REGISTER)],
    db: SessionDep,
    settings: SettingsDep,
    hasher: PasswordHasherDep,
    throttle: ThrottleDep,
    client_address: ClientAddressDep,
    origin: OriginDep,
) -> UserRead:
    user = await auth_service.sign_up(db, settings, hasher, throttle, data, client_address, origin)
    return UserRead.model_validate(user)


# What the route class (`MediaTypeRoute`) lets through to `read_login_credentials`.
LOGIN_MEDIA_TYPES = ("application/json", *_FORM_TYPES)
LOGIN_REQUEST_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            media_type: {
                "schema": {
                    "$ref": "#/components/schemas/"
                    + ("LoginRequest" if media_type == "application/json" else "LoginForm")
                },
                "examples": examples.LOGIN,
            }
            for media_type in LOGIN_MEDIA_TYPES
        },
    }
}


async def read_login_credentials(request: Request) -> LoginRequest:
    """JSON for API clients, the OAuth2 password form for /docs' Authorize dialog."""
    media_type = media_type_of(request)
    try:
        if is_json(media_type):
            return LoginRequest.model_validate_json(await request.body())
        if media_type in _FORM_TYPES:
            if media_type == _FORM_TYPES[0] and (await request.body()).lstrip()[:1] == b"{":
                # JSON sent as a form (curl -d): not "field required" for both fields.
                raise UnsupportedMediaType(
                    f"The body is JSON but its Content-Type is {media_type!r} (curl -d sends "
                    "that): send it with 'Content-Type: application/json'"
                )
            form = await request.form()
            fields = {key: value for key, value in form.items() if isinstance(value, str)}
            return LoginForm.model_validate(fields)
    except ValidationError as exc:
        errors = [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
        raise RequestValidationError(errors) from None
    raise unsupported(media_type, LOGIN_MEDIA_TYPES)


@router.post(
    "/token",
    response_model=Token,
    responses=error_responses(
        BODY_ERRORS,
        DATABASE_ERRORS,
        THROTTLE_ERRORS,
        InvalidCredentials,
        EmailNotVerified,
        MfaRequired,
        descriptions={
            401: "Unknown user, wrong password or inactive account: one answer for the three "
            "(`invalid_credentials`, with `WWW-Authenticate: Bearer`).",
        },
    ),
    summary="Log in: get an access token and a refresh token",
    description="`username` may be the username or the email address. Accepts JSON or the "
    "OAuth2 password form. Unknown user, wrong password and inactive user get the same 401. "
    "With REQUIRE_VERIFIED_EMAIL, the right password of an account whose address is not "
    "verified gets 403 `email_not_verified`. For an account with two-factor sign-in, the "
    "right password gets 403 `mfa_required` with an `mfa_token` for `POST /auth/token/mfa`. "
    "Attempts are throttled per client address, per identifier and address, and per account "
    "across addresses (429 + Retry-After).",
    openapi_extra=LOGIN_REQUEST_BODY,
)
async def login(
    credentials: Annotated[LoginRequest, Depends(read_login_credentials)],
    db: SessionDep,
    settings: SettingsDep,
    hasher: PasswordHasherDep,
    codec: TokenCodecDep,
    throttle: ThrottleDep,
    client_address: ClientAddressDep,
    origin: OriginDep,
) -> Token:
    pair = await auth_service.login(
        db,
        settings,
        hasher,
        codec,
        throttle,
        credentials.username,
        credentials.password,
        client_address,
        origin,
    )
    return token_response(pair)


@router.post(
    "/token/refresh",
    response_model=Token,
    responses=error_responses(
        BODY_ERRORS,
        DATABASE_ERRORS,
        InvalidToken,
        TokenExpired,
        SessionRevoked,
        RefreshTokenReused,
        InactiveUser,
        descriptions={401: _REFRESH_401},
    ),
    summary="Rotate a refresh token",
    description="Returns a new access token and a new refresh token; the one sent is spent. "
    "Sending a spent refresh token again revokes the whole session (401). An expired refresh "
    "token answers 401 `token_expired`, like an expired access token elsewhere; here every 401 "
    "means: log in again (a client that refreshes on `token_expired` must not do so for this "
    "call's own answer).",
)
async def refresh_token(data: RefreshRequest, request: Request) -> Token:
    # The hottest write: no dependency beyond the body (each costs every request); the
    # origin is read only if the refresh is refused as a reuse, which records it.
    resources = resources_of(request.app)
    pair = await auth_sessions.refresh(
        resources.sessionmaker,
        resources.token_codec,
        data.refresh_token,
        partial(origin_of, request),
        resources.session_rotator,
    )
    return token_response(pair)


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(
        BODY_ERRORS,
        DATABASE_ERRORS,
        InvalidToken,
        TokenExpired,
        descriptions={
            401: "The refresh token is refused: expired (`token_expired`), or malformed, badly "
            "signed or not a refresh token (`invalid_token`).",
        },
    ),
    summary="End the session of a refresh token",
    description="Its access tokens stop working at once. Idempotent. An expired refresh token "
    "answers 401 `token_expired`.",
)
async def logout(
    data: LogoutRequest, db: SessionDep, codec: TokenCodecDep, origin: OriginDep
) -> Response:
    await auth_sessions.logout(db, codec, data.refresh_token, origin)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/logout-all",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(SIGNED_IN_ERRORS),
    summary="End every session of the signed-in user",
)
async def logout_all(user: CurrentUser, db: SessionDep, origin: OriginDep) -> Response:
    await auth_sessions.end_all(db, user.id, actor_id=user.id, origin=origin)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/password-reset",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=PasswordResetAccepted,
    responses=error_responses(BODY_ERRORS, THROTTLE_ERRORS),
    summary="Ask for a password-reset link by email",
    description="Always 202 with the same body, whether or not an account has the address. "
    "A link valid for PASSWORD_RESET_TTL goes to an active account with a usable password; "
    "it replaces any earlier link. Throttled per client address (429 + Retry-After) and per "
    "email (over that limit: 202, nothing sent). The account is looked up after the answer "
    "is sent, so its time does not depend on the address either.",
)
async def request_password_reset(
    data: Annotated[PasswordResetRequest, Body(openapi_examples=examples.EMAIL_ONLY)],
    resources: ResourcesDep,
    throttle: ThrottleDep,
    client_address: ClientAddressDep,
    origin: OriginDep,
) -> PasswordResetAccepted:
    if await password_reset.accept_reset_request(throttle, data.email, client_address):
        await resources.background.spawn(
            password_reset.send_reset_link,
            resources.sessionmaker,
            resources.settings,
            data.email,
            origin,
        )
    return PasswordResetAccepted()


@router.post(
    "/password-reset/confirm",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(
        BODY_ERRORS,
        DATABASE_ERRORS,
        THROTTLE_ERRORS,
        InvalidResetToken,
        PasswordRejected,
        descriptions={
            400: "The token is unknown, used, superseded or expired (`invalid_token`), or the "
            "body is not UTF-8 or is nested too deeply (`bad_request`; malformed JSON is a "
            "422).",
            422: "Invalid input, or `new_password` breaks a password rule.",
        },
    ),
    summary="Set a new password with the token of a reset link",
    description="The token works once. 400 `invalid_token` for an unknown, used, superseded "
    "or expired one; 422 when the new password breaks a registration rule (the token stays "
    "usable). On success every session of the account ends and a notice is emailed.",
)
async def confirm_password_reset(
    data: PasswordResetConfirm,
    db: SessionDep,
    hasher: PasswordHasherDep,
    throttle: ThrottleDep,
    client_address: ClientAddressDep,
    origin: OriginDep,
) -> Response:
    await password_reset.confirm_reset(
        db, hasher, throttle, data.token, data.new_password, client_address, origin
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/verify-email",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(
        BODY_ERRORS,
        DATABASE_ERRORS,
        THROTTLE_ERRORS,
        InvalidResetToken,
        descriptions={
            400: "The token is unknown, used, superseded or expired, or was sent to an "
            "address the account no longer has (`invalid_token`), or the body is not UTF-8 or "
            "is nested too deeply (`bad_request`; malformed JSON is a 422).",
        },
    ),
    summary="Confirm an email address with the token of a verification link",
    description="The token works once, and only while the account still has the address it "
    "was sent to. Throttled per client address (429 + Retry-After).",
)
async def verify_email(
    data: EmailVerifyRequest,
    db: SessionDep,
    throttle: ThrottleDep,
    client_address: ClientAddressDep,
    origin: OriginDep,
) -> Response:
    await email_verification.verify(db, throttle, data.token, client_address, origin)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/verify-email/resend",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=EmailVerifyResendAccepted,
    responses=error_responses(BODY_ERRORS, THROTTLE_ERRORS),
    summary="Ask for a new verification link by email",
    description="Always 202 with the same body. A new link (replacing any earlier one) goes "
    "only to an active account whose address is not verified yet. Throttled per client "
    "address (429 + Retry-After) and per email (over that limit: 202, nothing sent). The "
    "account is looked up after the answer is sent, so its time does not depend on the "
    "address either.",
)
async def resend_verification(
    data: Annotated[EmailVerifyResend, Body(openapi_examples=examples.EMAIL_ONLY)],
    resources: ResourcesDep,
    throttle: ThrottleDep,
    client_address: ClientAddressDep,
) -> EmailVerifyResendAccepted:
    if await email_verification.accept_resend_request(throttle, data.email, client_address):
        await resources.background.spawn(
            email_verification.send_resend_link,
            resources.sessionmaker,
            resources.settings,
            data.email,
        )
    return EmailVerifyResendAccepted()
