from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, File, UploadFile, status

from app.core.errors import (
    EmailTaken,
    FileTooLarge,
    InvalidCurrentPassword,
    InvalidImage,
    LastSuperuser,
    PasswordRejected,
    UsernameTaken,
)
from app.dependencies import (
    CurrentUser,
    ImageProcessorDep,
    MediaStorageDep,
    OriginDep,
    PasswordHasherDep,
    ReadCurrentUser,
    SessionDep,
    SettingsDep,
    ThrottleDep,
)
from app.models.user import UserSnapshot
from app.routers import API_PREFIX, operation_id
from app.routers.content_type import MediaTypeRoute
from app.routers.responses import (
    BODY_ERRORS,
    SIGNED_IN_ERRORS,
    THROTTLE_ERRORS,
    error_responses,
)
from app.schemas import examples
from app.schemas.user import AccountDelete, EmailStatus, PasswordChange, ProfileUpdate, UserRead
from app.services import account

router = APIRouter(
    prefix=f"{API_PREFIX}/users",
    tags=["users"],
    route_class=MediaTypeRoute,
    generate_unique_id_function=operation_id,
)

PROFILE_RESPONSES = error_responses(SIGNED_IN_ERRORS)
PROFILE_DESCRIPTION = (
    "The signed-in user's profile. No request body is needed (an empty body or `{}` works): "
    "the user comes from the bearer token."
)


@router.post(
    "/profile",
    response_model=UserRead,
    responses=PROFILE_RESPONSES,
    summary="Get the user profile (the Django service's POST contract)",
    description=PROFILE_DESCRIPTION,
)
async def post_profile(user: ReadCurrentUser) -> UserSnapshot:
    return user  # validated and serialised once, by response_model


@router.get(
    "/profile",
    response_model=UserRead,
    responses=PROFILE_RESPONSES,
    summary="Get the user profile",
    description=PROFILE_DESCRIPTION,
)
async def get_profile(user: ReadCurrentUser) -> UserSnapshot:
    return user  # validated and serialised once, by response_model


@router.patch(
    "/profile",
    response_model=UserRead,
    responses=error_responses(
        SIGNED_IN_ERRORS,
        BODY_ERRORS,
        THROTTLE_ERRORS,
        InvalidCurrentPassword,
        UsernameTaken,
        EmailTaken,
        descriptions={
            403: "Changing the email or username needs the right `current_password` "
            "(code `invalid_current_password`).",
            422: "Invalid field, or an unknown or privileged field (`is_staff`, `id`, ...).",
        },
    ),
    summary="Update the user profile",
    description="Partial update: send only the fields to change. Changing `email` or "
    "`username` requires `current_password` in the same body. The same rules as at "
    "registration; a taken username or email (whatever its case) is a 409. A new email is "
    "unverified: a link to confirm it goes there, and a notice to the old address.",
)
async def update_profile(
    data: Annotated[ProfileUpdate, Body(openapi_examples=examples.PROFILE_UPDATE)],
    user: CurrentUser,
    db: SessionDep,
    settings: SettingsDep,
    hasher: PasswordHasherDep,
    throttle: ThrottleDep,
    origin: OriginDep,
) -> UserRead:
    updated = await account.update_profile(db, settings, hasher, throttle, user, data, origin)
    return UserRead.model_validate(updated)


@router.get(
    "/profile/email",
    response_model=EmailStatus,
    responses=PROFILE_RESPONSES,
    summary="The signed-in user's email address and whether it is verified",
)
async def get_email_status(user: CurrentUser) -> EmailStatus:
    return EmailStatus(
        email=user.email,
        verified=user.email_verified_at is not None,
        verified_at=user.email_verified_at,
    )


@router.put(
    "/profile/avatar",
    response_model=UserRead,
    responses=error_responses(
        SIGNED_IN_ERRORS,
        BODY_ERRORS,
        FileTooLarge,
        InvalidImage,
        descriptions={
            413: "The file is larger than AVATAR_MAX_BYTES (code `file_too_large`), or the "
            "whole request far larger (code `request_too_large`).",
            422: "Not a PNG, JPEG or WebP image (decided by the content), empty, truncated or "
            "corrupt, or more pixels than AVATAR_MAX_PIXELS.",
        },
    ),
    summary="Upload or replace the avatar",
    description="Multipart form with one field, `file`: a PNG, JPEG or WebP image. It is "
    "re-encoded (metadata such as EXIF/GPS removed) and stored under a new name; the "
    "profile's `avatar` is its URL path. The previous avatar file is deleted.",
)
async def upload_avatar(
    file: Annotated[UploadFile, File(description="PNG, JPEG or WebP image.")],
    user: CurrentUser,
    db: SessionDep,
    storage: MediaStorageDep,
    images: ImageProcessorDep,
    origin: OriginDep,
) -> UserRead:
    # Never more than the limit plus one byte: enough to tell that the file is too large.
    data = await file.read(images.max_bytes + 1)
    user = await account.set_avatar(db, storage, images, user, data, origin)
    return UserRead.model_validate(user)


@router.delete(
    "/profile/avatar",
    response_model=UserRead,
    responses=PROFILE_RESPONSES,
    summary="Remove the avatar",
    description="The avatar file is deleted and `avatar` becomes null (also when there was none).",
)
async def delete_avatar(
    user: CurrentUser, db: SessionDep, storage: MediaStorageDep, origin: OriginDep
) -> UserRead:
    return UserRead.model_validate(await account.delete_avatar(db, storage, user, origin))


@router.post(
    "/profile/password",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(
        SIGNED_IN_ERRORS,
        BODY_ERRORS,
        THROTTLE_ERRORS,
        InvalidCurrentPassword,
        PasswordRejected,
        descriptions={
            403: "Wrong `current_password` (code `invalid_current_password`).",
            422: "Invalid input, or `new_password` breaks a password rule.",
        },
    ),
    summary="Change the password",
    description="The new password follows the registration rules. Afterwards the old "
    "password no longer logs in.",
)
async def change_password(
    data: Annotated[PasswordChange, Body(openapi_examples=examples.PASSWORD_CHANGE)],
    user: CurrentUser,
    db: SessionDep,
    hasher: PasswordHasherDep,
    throttle: ThrottleDep,
    origin: OriginDep,
) -> None:
    await account.change_password(db, hasher, throttle, user, data, origin)


@router.delete(
    "/profile",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(
        SIGNED_IN_ERRORS,
        BODY_ERRORS,
        THROTTLE_ERRORS,
        InvalidCurrentPassword,
        LastSuperuser,
        descriptions={
            403: "Wrong `current_password` (code `invalid_current_password`).",
            409: "The user is the last active superuser (code `last_superuser`).",
        },
    ),
    summary="Delete the account",
    description="JSON body `{current_password}`. The account and its avatar are deleted; the "
    "username and email can be registered again.",
)
async def delete_account(
    data: Annotated[AccountDelete, Body(openapi_examples=examples.ACCOUNT_DELETE)],
    user: CurrentUser,
    db: SessionDep,
    hasher: PasswordHasherDep,
    throttle: ThrottleDep,
    storage: MediaStorageDep,
    origin: OriginDep,
) -> None:
    await account.delete_account(db, hasher, throttle, storage, user, data.current_password, origin)
