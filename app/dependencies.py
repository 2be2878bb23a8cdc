"""The Annotated dependencies routers use: one per concern."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.client_address import client_address
from app.core.config import Settings
from app.core.db import get_session
from app.core.errors import NotAuthenticated
from app.core.security import PasswordHasher, TokenCodec
from app.models.user import User
from app.services import sessions
from app.services.throttle import Throttle

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


def get_throttle(request: Request) -> Throttle:
    throttle: Throttle = request.app.state.throttle
    return throttle


SettingsDep = Annotated[Settings, Depends(get_settings_from_app)]
PasswordHasherDep = Annotated[PasswordHasher, Depends(get_password_hasher)]
TokenCodecDep = Annotated[TokenCodec, Depends(get_token_codec)]
ThrottleDep = Annotated[Throttle, Depends(get_throttle)]


def get_client_address(request: Request, settings: SettingsDep) -> str:
    """The peer address, or X-Forwarded-For's client when the peer is a TRUSTED_PROXIES."""
    peer = request.client.host if request.client else "unknown"
    if not settings.trusted_proxies:
        return peer
    return client_address(
        peer, request.headers.getlist("x-forwarded-for"), settings.trusted_proxies
    )


ClientAddressDep = Annotated[str, Depends(get_client_address)]

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
) -> User:
    return await sessions.user_from_access_token(session, codec, token)


CurrentUser = Annotated[User, Depends(get_current_user)]
