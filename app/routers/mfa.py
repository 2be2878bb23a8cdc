"""Two-factor sign-in: the user's enrolment and management, the sign-in's second step, and
a superuser's reset."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Response, status

from app.core.errors import (
    InactiveUser,
    InvalidCode,
    InvalidCurrentPassword,
    InvalidMfaToken,
    MfaAlreadyEnabled,
    MfaNotEnabled,
    MfaNotPending,
    MfaUnavailable,
)
from app.dependencies import (
    ClientAddressDep,
    CurrentUser,
    DataKeysDep,
    OriginDep,
    PasswordHasherDep,
    SessionDep,
    SettingsDep,
    SuperUser,
    ThrottleDep,
    TokenCodecDep,
)
from app.routers import API_PREFIX, operation_id
from app.routers.admin import USER_ERRORS_DESCRIBED, UserId
from app.routers.auth import token_response
from app.routers.content_type import MediaTypeRoute
from app.routers.responses import (
    BODY_ERRORS,
    PARAMETER_ERRORS,
    SIGNED_IN_ERRORS,
    STAFF_ERRORS,
    THROTTLE_ERRORS,
    error_responses,
)
from app.schemas import examples
from app.schemas.auth import Token
from app.schemas.mfa import (
    MfaManage,
    MfaSignIn,
    MfaState,
    RecoveryCodes,
    TotpConfirm,
    TotpEnrolment,
    TotpEnrolRequest,
)
from app.services import admin, mfa
from app.services import auth as auth_service

router = APIRouter(
    prefix=API_PREFIX, route_class=MediaTypeRoute, generate_unique_id_function=operation_id
)

PROFILE_MFA = "/users/profile/mfa"
_MANAGE_403 = "Wrong `current_password` (code `invalid_current_password`)."
_MANAGE_400 = (
    "The code is wrong, expired or already used (`invalid_code`), or the body is not UTF-8 "
    "or is nested too deeply (`bad_request`)."
)


@router.post(
    "/auth/token/mfa",
    response_model=Token,
    tags=["auth"],
    responses=error_responses(
        BODY_ERRORS,
        THROTTLE_ERRORS,
        InvalidCode,
        InvalidMfaToken,
        InactiveUser,
        MfaUnavailable,
        descriptions={
            400: _MANAGE_400,
            401: "The `mfa_token` is unknown, expired (5 minutes), used, or had 5 wrong codes "
            "(`invalid_mfa_token`): log in again.",
        },
    ),
    summary="Log in, second step: a code of the authenticator app or a recovery code",
    description="After `POST /auth/token` answered 403 `mfa_required` with an `mfa_token`: "
    "send it with `code` (the app's 6 digits) or `recovery_code`. The answer is the usual "
    'token pair; its access token carries `amr: ["pwd", "otp"]` (refreshed ones too). '
    "Wrong codes count in the account's failed-attempt throttle (429).",
)
async def sign_in_second_step(
    data: MfaSignIn,
    db: SessionDep,
    settings: SettingsDep,
    codec: TokenCodecDep,
    throttle: ThrottleDep,
    keys: DataKeysDep,
    client_address: ClientAddressDep,
    origin: OriginDep,
) -> Token:
    pair = await auth_service.finish_sign_in(
        db,
        settings,
        codec,
        throttle,
        keys,
        data.mfa_token,
        code=data.code,
        recovery_code=data.recovery_code,
        client_address=client_address,
        origin=origin,
    )
    return token_response(pair)


@router.get(
    PROFILE_MFA,
    response_model=MfaState,
    tags=["two-factor"],
    responses=error_responses(SIGNED_IN_ERRORS),
    summary="Whether two-factor sign-in is on, and the recovery codes left",
)
async def get_mfa_state(user: CurrentUser, db: SessionDep) -> MfaState:
    found = await mfa.state(db, user.id)
    return MfaState(totp=found.totp, recovery_codes_left=found.recovery_codes_left)


@router.post(
    f"{PROFILE_MFA}/totp",
    response_model=TotpEnrolment,
    tags=["two-factor"],
    responses=error_responses(
        SIGNED_IN_ERRORS,
        BODY_ERRORS,
        THROTTLE_ERRORS,
        InvalidCurrentPassword,
        MfaAlreadyEnabled,
        MfaUnavailable,
        descriptions={403: _MANAGE_403},
    ),
    summary="Start enrolling an authenticator app",
    description="Returns a new secret (160 bits; RFC 6238: SHA-1, 6 digits, 30 s) and its "
    "`otpauth://` URI for a QR code. Nothing changes for sign-in until "
    "`POST /users/profile/mfa/totp/confirm`; posting again replaces a pending secret. 409 "
    "`mfa_already_enabled` when it is on already.",
)
async def enrol_totp(
    data: Annotated[TotpEnrolRequest, Body(openapi_examples=examples.TOTP_ENROL)],
    user: CurrentUser,
    db: SessionDep,
    settings: SettingsDep,
    keys: DataKeysDep,
    hasher: PasswordHasherDep,
    throttle: ThrottleDep,
) -> TotpEnrolment:
    enrolment = await mfa.enrol(
        db, keys, hasher, throttle, user, data.current_password, settings.service_name
    )
    return TotpEnrolment(secret=enrolment.secret, otpauth_uri=enrolment.otpauth_uri)


@router.post(
    f"{PROFILE_MFA}/totp/confirm",
    response_model=RecoveryCodes,
    tags=["two-factor"],
    responses=error_responses(
        SIGNED_IN_ERRORS,
        BODY_ERRORS,
        THROTTLE_ERRORS,
        InvalidCode,
        MfaNotPending,
        MfaUnavailable,
        descriptions={400: _MANAGE_400},
    ),
    summary="Turn two-factor sign-in on with a code of the app",
    description="Returns ten single-use recovery codes, shown this once (only their hashes "
    "are kept). From now on a login asks for a code after the password.",
)
async def confirm_totp(
    data: TotpConfirm,
    user: CurrentUser,
    db: SessionDep,
    keys: DataKeysDep,
    throttle: ThrottleDep,
    client_address: ClientAddressDep,
    origin: OriginDep,
) -> RecoveryCodes:
    codes = await mfa.confirm(db, keys, throttle, user, data.code, client_address, origin)
    return RecoveryCodes(recovery_codes=codes)


_MANAGE_ERRORS = error_responses(
    SIGNED_IN_ERRORS,
    BODY_ERRORS,
    THROTTLE_ERRORS,
    InvalidCurrentPassword,
    InvalidCode,
    MfaNotEnabled,
    MfaUnavailable,
    descriptions={400: _MANAGE_400, 403: _MANAGE_403},
)


@router.post(
    f"{PROFILE_MFA}/recovery-codes",
    response_model=RecoveryCodes,
    tags=["two-factor"],
    responses=_MANAGE_ERRORS,
    summary="Draw a new set of recovery codes",
    description="With the password and a code of the app (or a recovery code). The old set "
    "stops working.",
)
async def regenerate_recovery_codes(
    data: MfaManage,
    user: CurrentUser,
    db: SessionDep,
    keys: DataKeysDep,
    hasher: PasswordHasherDep,
    throttle: ThrottleDep,
    client_address: ClientAddressDep,
    origin: OriginDep,
) -> RecoveryCodes:
    codes = await mfa.regenerate_recovery_codes(
        db, keys, hasher, throttle, user, data.current_password, data.code, client_address, origin
    )
    return RecoveryCodes(recovery_codes=codes)


@router.delete(
    f"{PROFILE_MFA}/totp",
    status_code=status.HTTP_204_NO_CONTENT,
    tags=["two-factor"],
    responses=_MANAGE_ERRORS,
    summary="Turn two-factor sign-in off",
    description="JSON body `{current_password, code}`; `code` may be a recovery code. The "
    "secret and the recovery codes are deleted.",
)
async def disable_totp(
    data: MfaManage,
    user: CurrentUser,
    db: SessionDep,
    keys: DataKeysDep,
    hasher: PasswordHasherDep,
    throttle: ThrottleDep,
    client_address: ClientAddressDep,
    origin: OriginDep,
) -> Response:
    await mfa.disable(
        db, keys, hasher, throttle, user, data.current_password, data.code, client_address, origin
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete(
    "/users/{user_id}/mfa",
    status_code=status.HTTP_204_NO_CONTENT,
    tags=["admin"],
    responses=error_responses(STAFF_ERRORS, PARAMETER_ERRORS, descriptions=USER_ERRORS_DESCRIBED),
    summary="Reset a user's second factor (superuser)",
    description="For a user who lost both the app and the recovery codes: two-factor "
    "sign-in is off until they enrol again; they are told by email. Idempotent.",
)
async def reset_user_mfa(
    user_id: UserId, superuser: SuperUser, db: SessionDep, origin: OriginDep
) -> Response:
    await mfa.reset_by_admin(db, await admin.get_user(db, user_id), superuser, origin)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
