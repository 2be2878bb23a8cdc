"""The Annotated dependencies routers use: one per concern."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import Settings
from app.core.db import get_session
from app.core.errors import InactiveUser, InvalidToken, NotAuthenticated, UserNotFound
from app.core.security import LegacyTokenCodec, PasswordHasher, TokenCodec
from app.models.user import User
from app.repositories import users as users_repo

TOKEN_URL = "/api/v1/auth/token"  # noqa: S105
MAX_AUTHORIZATION_HEADER = 8192

SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


def get_settings_from_app(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_password_hasher(request: Request) -> PasswordHasher:
    hasher: PasswordHasher = request.app.state.password_hasher
    return hasher


def get_token_codec(request: Request) -> TokenCodec:
    codec: TokenCodec = request.app.state.token_codec
    return codec


def get_legacy_token_codec(request: Request) -> LegacyTokenCodec | None:
    codec: LegacyTokenCodec | None = getattr(request.app.state, "legacy_token_codec", None)
    return codec


SettingsDep = Annotated[Settings, Depends(get_settings_from_app)]
PasswordHasherDep = Annotated[PasswordHasher, Depends(get_password_hasher)]
TokenCodecDep = Annotated[TokenCodec, Depends(get_token_codec)]
LegacyTokenCodecDep = Annotated[LegacyTokenCodec | None, Depends(get_legacy_token_codec)]

_bearer = OAuth2PasswordBearer(tokenUrl=TOKEN_URL, auto_error=False)


async def get_bearer_token(request: Request, token: Annotated[str | None, Depends(_bearer)]) -> str:
    # Oversized headers are refused before the token is decoded.
    if len(request.headers.get("authorization", "")) > MAX_AUTHORIZATION_HEADER:
        raise NotAuthenticated("Authorization header too large")
    if not token:
        raise NotAuthenticated()
    return token


async def get_current_user(
    token: Annotated[str, Depends(get_bearer_token)],
    session: SessionDep,
    codec: TokenCodecDep,
    legacy_codec: LegacyTokenCodecDep,
) -> User:
    """401 for a bad token or an inactive user; 404 when a valid token's user is gone.

    Our own tokens first; the Django service's SimpleJWT access tokens only when
    LEGACY_SIMPLEJWT_SIGNING_KEY is set and ours did not verify.
    """
    try:
        user_id = codec.user_id_from_access_token(token)
    except InvalidToken:
        if legacy_codec is None:
            raise
        user_id = legacy_codec.user_id_from_access_token(token)
    user = await users_repo.get_by_id(session, user_id)
    if user is None:
        raise UserNotFound()
    if not user.is_active:
        raise InactiveUser()
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]
