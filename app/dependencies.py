"""The Annotated dependencies routers use: one per concern.

What start-up built (`app.resources.AppResources`) is one typed object: `get_resources`
(`ResourcesDep`) hands a route all of it, and the aliases below (`SettingsDep`,
`TokenCodecDep`, ...) one part each, built by one factory (`_part`), so a route's signature
still says what it needs.

Every dependency is ``async def``, even those that only pick an attribute: FastAPI runs a
plain ``def`` dependency in the thread pool, two thread hops per request each.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.client_address import client_address
from app.core.config import Settings
from app.core.db import committing_db
from app.core.encryption import DataKeys
from app.core.errors import NotAuthenticated, PermissionDenied
from app.core.images import ImageProcessor
from app.core.logging import request_id_var
from app.core.security import LegacyTokenClaims, LegacyTokenCodec, PasswordHasher, TokenCodec
from app.core.storage import MediaStorage
from app.models.user import User, UserSnapshot
from app.resources import AppResources, resources_of
from app.services import auth_sessions, legacy_tokens
from app.services.audit import Origin
from app.services.search_probe import TrigramStats
from app.services.throttle import Throttle

TOKEN_URL = "/api/v1/auth/token"  # noqa: S105
MAX_AUTHORIZATION_HEADER = 8192

T = TypeVar("T")


async def get_resources(request: Request) -> AppResources:
    return resources_of(request.app)


ResourcesDep = Annotated[AppResources, Depends(get_resources)]


def _part(pick: Callable[[AppResources], T]) -> Any:
    """``Depends`` on one part of the resources: ``_part(lambda r: r.throttle)``.

    The part is read from the app, not through ``ResourcesDep``: FastAPI solves a
    dependency's sub-dependencies wherever it is used, before looking in its per-request
    cache, so an alias over ``ResourcesDep`` is two dependencies to solve per use, not one
    (+3 % instructions on ``PATCH /users/profile``). The same goes for the session and
    signed-in user dependencies below.
    """

    async def part(request: Request) -> T:
        return pick(resources_of(request.app))

    return Depends(part)


SettingsDep = Annotated[Settings, _part(lambda r: r.settings)]
PasswordHasherDep = Annotated[PasswordHasher, _part(lambda r: r.password_hasher)]
TokenCodecDep = Annotated[TokenCodec, _part(lambda r: r.token_codec)]
ThrottleDep = Annotated[Throttle, _part(lambda r: r.throttle)]
MediaStorageDep = Annotated[MediaStorage, _part(lambda r: r.media_storage)]
ImageProcessorDep = Annotated[ImageProcessor, _part(lambda r: r.image_processor)]
TrigramStatsDep = Annotated[TrigramStats, _part(lambda r: r.trigram_stats)]
DataKeysDep = Annotated[DataKeys, _part(lambda r: r.data_keys)]


async def get_db(request: Request) -> AsyncIterator[AsyncSession]:
    """The request's unit of work (`app.core.db.committing_db`)."""
    async with committing_db(resources_of(request.app).sessionmaker) as db:
        yield db


async def get_read_db(request: Request) -> AsyncIterator[AsyncSession]:
    """One read-only session per request (routes that never write): nothing to commit."""
    async with resources_of(request.app).read_sessionmaker() as db:
        yield db


SessionDep = Annotated[AsyncSession, Depends(get_db, scope="function")]
# Routes that never write (profile reads, staff reads): one round trip, no transaction.
ReadSessionDep = Annotated[AsyncSession, Depends(get_read_db, scope="function")]


async def get_client_address(request: Request) -> str:
    """The peer address, or X-Forwarded-For's client when the peer is a TRUSTED_PROXIES."""
    return _client_address(request, resources_of(request.app).settings)


def _client_address(request: Request, settings: Settings) -> str:
    peer = request.client.host if request.client else "unknown"
    if not settings.trusted_proxies:
        return peer
    return client_address(
        peer, request.headers.getlist("x-forwarded-for"), settings.trusted_proxies
    )


ClientAddressDep = Annotated[str, Depends(get_client_address)]


async def get_origin(request: Request) -> Origin:
    """Where the request comes from, for the audit trail and the session list. Reads the
    address itself rather than through `ClientAddressDep` (see `_part`)."""
    return origin_of(request)


def origin_of(request: Request) -> Origin:
    """`get_origin` outside dependency injection: for a route that needs it only on a rare
    path (a refresh records only a token's reuse)."""
    return _origin(request, _client_address(request, resources_of(request.app).settings))


def _origin(request: Request, address: str) -> Origin:
    return Origin.of(address, request.headers.get("user-agent"), request_id_var.get())


OriginDep = Annotated[Origin, Depends(get_origin)]

_bearer = OAuth2PasswordBearer(tokenUrl=TOKEN_URL, auto_error=False)


def _checked_bearer_token(request: Request, token: str | None) -> str:
    header = request.headers.get("authorization", "")
    # Oversized headers are refused before the token is decoded.
    if len(header) > MAX_AUTHORIZATION_HEADER:
        raise NotAuthenticated("Authorization header too large")
    if not token:
        # No bearer credentials: the bare challenge (RFC 6750 section 3.1), and a detail
        # that says what was wrong with the header, if there was one.
        if not header.strip():
            raise NotAuthenticated()
        scheme, _, rest = header.strip().partition(" ")
        if scheme.lower() == "bearer":
            raise NotAuthenticated(
                "The Authorization header has no token after 'Bearer': "
                "send 'Authorization: Bearer <token>'"
            )
        if not rest.strip():
            raise NotAuthenticated(
                "The Authorization header holds no scheme: send 'Authorization: Bearer <token>'"
            )
        raise NotAuthenticated(
            f"The Authorization header's scheme is {scheme[:20]!r}, not 'Bearer': "
            "send 'Authorization: Bearer <token>'"
        )
    return token


async def get_bearer_token(request: Request, token: Annotated[str | None, Depends(_bearer)]) -> str:
    return _checked_bearer_token(request, token)


BearerToken = Annotated[str, Depends(get_bearer_token)]


@dataclass(frozen=True, slots=True)
class SignIn:
    """The signed-in user and the auth session of the request's token (None for a token of
    the replaced service, which has none)."""

    user: User
    auth_session_id: uuid.UUID | None


async def _signed_in(
    request: Request,
    db: AsyncSession,
    codec: TokenCodec,
    token: str,
    legacy_codec: LegacyTokenCodec | None,
) -> SignIn:
    user, via = await auth_sessions.resolve_sign_in(
        auth_sessions.OrmUserLookup(db), codec, token, legacy_codec
    )
    request.state.user_id = user.id  # for the request log line
    if isinstance(via, LegacyTokenClaims):
        await _legacy_token_used(request, user.id, via)
        return SignIn(user, None)
    return SignIn(user, via)


async def get_sign_in(request: Request, token: BearerToken, db: SessionDep) -> SignIn:
    """The signed-in user with the token's session: for their own endpoints, where the
    replaced service's tokens work too (LEGACY_SIMPLEJWT_SIGNING_KEY)."""
    resources = resources_of(request.app)
    return await _signed_in(request, db, resources.token_codec, token, resources.legacy_token_codec)


async def get_current_user(request: Request, token: BearerToken, db: SessionDep) -> User:
    """`get_sign_in`'s user. Not a dependency on it: each layer of dependencies costs every
    request that uses it (see `_part`)."""
    return (await get_sign_in(request, token, db)).user


async def get_current_user_from_own_token(
    request: Request, token: BearerToken, db: SessionDep
) -> User:
    """The signed-in user, from one of this service's tokens only: staff and superuser
    routes refuse the replaced service's (401; staff log in again)."""
    resources = resources_of(request.app)
    return (await _signed_in(request, db, resources.token_codec, token, None)).user


CurrentSignIn = Annotated[SignIn, Depends(get_sign_in)]
CurrentUser = Annotated[User, Depends(get_current_user)]
OwnTokenUser = Annotated[User, Depends(get_current_user_from_own_token)]


async def get_current_user_for_read(request: Request) -> UserSnapshot:
    """The same checks as `get_current_user`, for routes that only read: on PostgreSQL one
    prepared statement on the driver (`LiveUserReader`), elsewhere a read-only session.

    One dependency with no dependencies of its own: it reads the resources and the bearer
    token itself. FastAPI resolves each dependency anew on every request, and this is the
    profile endpoint's, the service's hottest path (the bearer scheme as a sub-dependency
    cost 7 % of its instructions: bench/RESULTS.md). The OpenAPI document still gives its
    routes the scheme (`SCHEME_READERS`).
    """
    resources = resources_of(request.app)
    token = await _bearer(request)
    return await _read_user(request, token, resources, resources.legacy_token_codec)


async def _read_user(
    request: Request,
    token: str | None,
    resources: AppResources,
    legacy_codec: LegacyTokenCodec | None,
) -> UserSnapshot:
    token = _checked_bearer_token(request, token)
    codec = resources.token_codec
    reader = resources.live_user_reader
    if reader is not None:
        user, via = await auth_sessions.resolve_sign_in(reader, codec, token, legacy_codec)
    else:
        async with resources.read_sessionmaker() as db:
            orm_user, via = await auth_sessions.resolve_sign_in(
                auth_sessions.OrmUserLookup(db), codec, token, legacy_codec
            )
            user = UserSnapshot.of(orm_user)
    request.state.user_id = user.id  # for the request log line
    if isinstance(via, LegacyTokenClaims):
        await _legacy_token_used(request, user.id, via)
    return user


async def _legacy_token_used(request: Request, user_id: int, claims: LegacyTokenClaims) -> None:
    """``legacy_token.used``, the first time each of the replaced service's tokens is."""
    resources = resources_of(request.app)
    origin = _origin(request, _client_address(request, resources.settings))
    await legacy_tokens.note_use(
        resources.throttle_storage, resources.sessionmaker, user_id, claims, origin
    )


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


async def get_staff_user_for_read(request: Request) -> UserSnapshot:
    """`get_staff_user` for routes that only read: one of our tokens only, as there (the
    token read as `get_current_user_for_read` reads it)."""
    user = await _read_user(request, await _bearer(request), resources_of(request.app), None)
    if not (user.is_staff or user.is_superuser):
        raise PermissionDenied()
    return user


StaffUser = Annotated[User, Depends(get_staff_user)]
ReadStaffUser = Annotated[UserSnapshot, Depends(get_staff_user_for_read)]
SuperUser = Annotated[User, Depends(get_superuser)]

# Dependencies that read the bearer token themselves rather than through the scheme as a
# sub-dependency, and the scheme the OpenAPI document gives their routes (app/main.py).
BEARER_SCHEME = _bearer
SCHEME_READERS = frozenset({get_current_user_for_read, get_staff_user_for_read})
