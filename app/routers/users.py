from __future__ import annotations

from fastapi import APIRouter

from app.dependencies import CurrentUser
from app.routers.responses import error_responses
from app.schemas.user import UserRead

router = APIRouter(prefix="/users", tags=["users"])

PROFILE_RESPONSES = error_responses(401, 404)
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
async def post_profile(user: CurrentUser) -> UserRead:
    return UserRead.model_validate(user)


@router.get(
    "/profile",
    response_model=UserRead,
    responses=PROFILE_RESPONSES,
    summary="Get the user profile",
    description=PROFILE_DESCRIPTION,
)
async def get_profile(user: CurrentUser) -> UserRead:
    return UserRead.model_validate(user)
