"""User management: staff may read, superusers may change and delete."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Body, Path, Query, status
from pydantic import BeforeValidator

from app.core.errors import EmailTaken, LastSuperuser, UsernameTaken
from app.dependencies import (
    MediaStorageDep,
    OriginDep,
    ReadSessionDep,
    ReadStaffUser,
    SessionDep,
    SettingsDep,
    SuperUser,
    TrigramStatsDep,
)
from app.models.user import ID_MAX
from app.routers import API_PREFIX, operation_id
from app.routers.content_type import MediaTypeRoute
from app.routers.responses import (
    BODY_ERRORS,
    PARAMETER_ERRORS,
    STAFF_ERRORS,
    error_responses,
)
from app.schemas import examples
from app.schemas.user import AdminUserUpdate, UserListQuery, UserPage, UserRead
from app.services import admin

router = APIRouter(
    prefix=f"{API_PREFIX}/users",
    tags=["admin"],
    route_class=MediaTypeRoute,
    generate_unique_id_function=operation_id,
)

_DIGITS = re.compile(r"[0-9]{1,19}")


def _plain_integer(value: object) -> object:
    """Only plain decimal digits: no '1.0', '+1', '1_000' or non-ASCII digits."""
    if isinstance(value, str) and not _DIGITS.fullmatch(value):
        raise ValueError("Input should be a positive integer")
    return value


UserId = Annotated[
    int,
    Path(ge=1, le=ID_MAX, description="The user's id (1 to 2^63-1)."),
    BeforeValidator(_plain_integer),
]

_401 = (
    "Not authenticated: the bearer token is missing (`not_authenticated`), expired "
    "(`token_expired`: renew it with the refresh token), malformed, badly signed or not an "
    "access token (`invalid_token`), its session has ended, or the user is inactive. Tokens "
    "of the replaced Django service (LEGACY_SIMPLEJWT_SIGNING_KEY) are refused here: staff "
    "log in again."
)
_403 = "The signed-in user is not staff (reading) or not a superuser (changing)."
_404 = "No user has this id, or the token's user no longer exists."
USER_ERRORS_DESCRIBED = {401: _401, 403: _403, 404: _404}


@router.get(
    "",
    response_model=UserPage,
    responses=error_responses(
        STAFF_ERRORS,
        PARAMETER_ERRORS,
        descriptions={
            401: _401,
            403: _403,
            422: "Invalid query: unknown parameter, `ordering` outside the allow-list, "
            "`limit` outside 1..100, negative `offset`.",
        },
    ),
    summary="List users (staff)",
    description="Filter with `search` (substring of username, email, first or last name; "
    "case-insensitive; `%` and `_` match themselves), `is_active`, `is_staff`; sort with "
    "`ordering` (`id`, `username`, `email`, `date_joined`, `last_login`, `-` for "
    "descending; users who never logged in come last); page with `limit` and `offset`. "
    "`total` is exact up to 1,000 matches; on PostgreSQL, 1001 means more than 1,000.",
)
async def list_users(
    query: Annotated[UserListQuery, Query()],
    _staff: ReadStaffUser,
    db: ReadSessionDep,
    trigram_stats: TrigramStatsDep,
) -> UserPage:
    users, total = await admin.list_users(db, query, trigram_stats)
    return UserPage(
        items=[UserRead.model_validate(user) for user in users],
        total=total,
        limit=query.limit,
        offset=query.offset,
    )


@router.get(
    "/{user_id}",
    response_model=UserRead,
    responses=error_responses(STAFF_ERRORS, PARAMETER_ERRORS, descriptions=USER_ERRORS_DESCRIBED),
    summary="Get a user (staff)",
)
async def get_user(user_id: UserId, _staff: ReadStaffUser, db: ReadSessionDep) -> UserRead:
    return UserRead.model_validate(await admin.get_user(db, user_id))


@router.patch(
    "/{user_id}",
    response_model=UserRead,
    responses=error_responses(
        STAFF_ERRORS,
        BODY_ERRORS,
        UsernameTaken,
        EmailTaken,
        LastSuperuser,
        descriptions={
            401: _401,
            403: _403,
            404: _404,
            409: "The username or email is taken (`username_taken`, `email_taken`), or the "
            "change would leave no active superuser (`last_superuser`).",
        },
    ),
    summary="Update a user (superuser)",
    description="Partial update of the profile fields and `is_active`, `is_staff`, "
    "`is_superuser`, `email_verified`. A deactivated user's tokens stop working at once. A "
    "new email is unverified unless `email_verified` is sent too; a link to confirm it goes "
    "there, and a notice to the old address.",
)
async def update_user(
    user_id: UserId,
    data: Annotated[AdminUserUpdate, Body(openapi_examples=examples.ADMIN_USER_UPDATE)],
    superuser: SuperUser,
    db: SessionDep,
    settings: SettingsDep,
    origin: OriginDep,
) -> UserRead:
    updated = await admin.update_user(db, settings, user_id, data, superuser, origin)
    return UserRead.model_validate(updated)


@router.delete(
    "/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(
        STAFF_ERRORS,
        PARAMETER_ERRORS,
        LastSuperuser,
        descriptions={
            401: _401,
            403: _403,
            404: _404,
            409: "The user is the last active superuser (code `last_superuser`).",
        },
    ),
    summary="Delete a user (superuser)",
)
async def delete_user(
    user_id: UserId,
    superuser: SuperUser,
    db: SessionDep,
    storage: MediaStorageDep,
    origin: OriginDep,
) -> None:
    await admin.delete_user(db, storage, user_id, superuser, origin)
