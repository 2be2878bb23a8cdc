"""The Annotated dependencies routers use: one per concern.

Every dependency is ``async def``, even those that only read ``app.state``: FastAPI runs a
plain ``def`` dependency in the thread pool, two thread hops per request each.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.client_address import client_address
from app.core.config import Settings
from app.core.db import get_read_session, get_session
from app.core.errors import NotAuthenticated, PermissionDenied
from app.core.images import ImageProcessor
from app.core.security import LegacyTokenCodec, PasswordHasher, TokenCodec
from app.core.storage import MediaStorage
from app.models.user import User, UserSnapshot
from app.repositories.live_users import LiveUserReader
from app.services import sessions
from app.services.search_probe import TrigramStats
from app.services.throttle import Throttle

TOKEN_URL = "/api/v1/auth/token"  # noqa: S105
MAX_AUTHORIZATION_HEADER = 8192

SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
# Routes that never write (profile reads, staff reads): one round trip, no transaction.
ReadSessionDep = Annotated[AsyncSession, Depends(get_read_session, scope="function")]


async def get_settings_from_app(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_password_hasher(request: Request) -> PasswordHasher:
    hasher: PasswordHasher = request.app.state.password_hasher
    return hasher


async def get_token_codec(request: Request) -> TokenCodec:
    codec: TokenCodec = request.app.state.token_codec
    return codec


async def get_throttle(request: Request) -> Throttle:
    throttle: Throttle = request.app.state.throttle
    return throttle


async def get_media_storage(request: Request) -> MediaStorage:
    storage: MediaStorage = request.app.state.media_storage
    return storage


async def get_image_processor(request: Request) -> ImageProcessor:
    images: ImageProcessor = request.app.state.image_processor
    return images


async def get_legacy_token_codec(request: Request) -> LegacyTokenCodec | None:
    codec: LegacyTokenCodec | None = getattr(request.app.state, "legacy_token_codec", None)
    return codec


async def get_trigram_stats(request: Request) -> TrigramStats:
    stats: TrigramStats = request.app.state.trigram_stats
    return stats


SettingsDep = Annotated[Settings, Depends(get_settings_from_app)]
TrigramStatsDep = Annotated[TrigramStats, Depends(get_trigram_stats)]
PasswordHasherDep = Annotated[PasswordHasher, Depends(get_password_hasher)]
TokenCodecDep = Annotated[TokenCodec, Depends(get_token_codec)]
ThrottleDep = Annotated[Throttle, Depends(get_throttle)]


async def get_client_address(request: Request, settings: SettingsDep) -> str:
    """The peer address, or X-Forwarded-For's client when the peer is a TRUSTED_PROXIES."""
    peer = request.client.host if request.client else "unknown"
    if not settings.trusted_proxies:
        return peer
    return client_address(
        peer, request.headers.getlist("x-forwarded-for"), settings.trusted_proxies
    )


ClientAddressDep = Annotated[str, Depends(get_client_address)]

MediaStorageDep = Annotated[MediaStorage, Depends(get_media_storage)]
ImageProcessorDep = Annotated[ImageProcessor, Depends(get_image_processor)]

LegacyTokenCodecDep = Annotated[LegacyTokenCodec | None, Depends(get_legacy_token_codec)]

_bearer = OAuth2PasswordBearer(tokenUrl=TOKEN_URL, auto_error=False)


def _checked_bearer_token(request: Request, token: str | None) -> str:
    # Oversized headers are refused before the token is decoded.
    if len(request.headers.get("authorization", "")) > MAX_AUTHORIZATION_HEADER:
        raise NotAuthenticated("Authorization header too large")
    if not token:
        raise NotAuthenticated()
    return token


async def get_bearer_token(request: Request, token: Annotated[str | None, Depends(_bearer)]) -> str:
    return _checked_bearer_token(request, token)


BearerToken = Annotated[str, Depends(get_bearer_token)]


async def _signed_in(
    request: Request,
    session: AsyncSession,
    codec: TokenCodec,
    token: str,
    legacy_codec: LegacyTokenCodec | None,
) -> User:
    user = await sessions.user_from_access_token(session, codec, token, legacy_codec)
    request.state.user_id = user.id  # for the request log line
    return user


async def get_current_user(
    request: Request,
    token: BearerToken,
    session: SessionDep,
    codec: TokenCodecDep,
    legacy_codec: LegacyTokenCodecDep,
) -> User:
    """The signed-in user, for their own endpoints: the replaced service's tokens work
    here (LEGACY_SIMPLEJWT_SIGNING_KEY)."""
    return await _signed_in(request, session, codec, token, legacy_codec)


async def get_current_user_from_own_token(
    request: Request, token: BearerToken, session: SessionDep, codec: TokenCodecDep
) -> User:
    """The signed-in user, from one of this service's tokens only: staff and superuser
    routes refuse the replaced service's (401; staff log in again)."""
    return await _signed_in(request, session, codec, token, None)


CurrentUser = Annotated[User, Depends(get_current_user)]
OwnTokenUser = Annotated[User, Depends(get_current_user_from_own_token)]


async def get_current_user_for_read(
    request: Request, token: Annotated[str | None, Depends(_bearer)]
) -> UserSnapshot:
    """The same checks as `get_current_user`, for routes that only read: on PostgreSQL one
    prepared statement on the driver (`LiveUserReader`), elsewhere a read-only session.

    One dependency (beside the bearer scheme, which documents the route's security) that
    reads the token codecs from ``app.state`` itself: FastAPI resolves each dependency
    anew on every request, and this is the profile endpoint's, the service's hottest path
    (see bench/RESULTS.md).
    """
    state = request.app.state
    return await _read_user(request, token, state.legacy_token_codec)


async def _read_user(
    request: Request, token: str | None, legacy_codec: LegacyTokenCodec | None
) -> UserSnapshot:
    token = _checked_bearer_token(request, token)
    state = request.app.state
    codec: TokenCodec = state.token_codec
    reader: LiveUserReader | None = state.live_user_reader
    if reader is not None:
        user = await sessions.resolve_access_token(reader, codec, token, legacy_codec)
    else:
        sessionmaker: async_sessionmaker[AsyncSession] = state.read_sessionmaker
        async with sessionmaker() as session:
            orm_user = await sessions.user_from_access_token(session, codec, token, legacy_codec)
            user = UserSnapshot.of(orm_user)
    request.state.user_id = user.id  # for the request log line
    return user


ReadCurrentUser = Annotated[UserSnapshot, Depends(get_current_user_for_read)]


async def get_staff_user(user: OwnTokenUser) -> User:
    """Staff may read the users; a superuser counts as staff (Django: all permissions)."""
    if not (user.is_staff or user.is_superuser):
        raise PermissionDenied()
    return user


async def get_superuser(user: OwnTokenUser) -> User:
    if not user.is_superuser:
        raise PermissionDenied()
    return user


async def get_staff_user_for_read(
    request: Request, token: Annotated[str | None, Depends(_bearer)]
) -> UserSnapshot:
    """`get_staff_user` for routes that only read: one of our tokens only, as there."""
    user = await _read_user(request, token, None)
    if not (user.is_staff or user.is_superuser):
        raise PermissionDenied()
    return user


StaffUser = Annotated[User, Depends(get_staff_user)]
ReadStaffUser = Annotated[UserSnapshot, Depends(get_staff_user_for_read)]
SuperUser = Annotated[User, Depends(get_superuser)]
