"""Login sessions: token pairs, rotation with reuse detection, logout, revocation.

Each login starts a session (a refresh-token family). Access tokens carry the session id,
and every authenticated request checks in the same query as the user load that the
session is still live, so logout and revocation take effect at once, not at expiry.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.db import committing_db
from app.core.errors import (
    AuthSessionNotFound,
    InactiveUser,
    InvalidToken,
    RefreshTokenReused,
    SessionRevoked,
    TokenExpired,
    UserNotFound,
)
from app.core.security import (
    IssuedToken,
    LegacyTokenClaims,
    LegacyTokenCodec,
    TokenClaims,
    TokenCodec,
    new_jti,
)
from app.models.auth_session import AuthSession
from app.models.base import utcnow
from app.models.user import User
from app.repositories import auth_sessions as auth_sessions_repo
from app.repositories import users as users_repo
from app.services import audit, notices
from app.services.audit import EventType, Origin


class _TokenHolder(Protocol):
    @property
    def is_active(self) -> bool: ...
    @property
    def imported(self) -> bool: ...
    @property
    def tokens_valid_after(self) -> datetime | None: ...


UserT = TypeVar("UserT", bound=_TokenHolder)
UserT_co = TypeVar("UserT_co", bound=_TokenHolder, covariant=True)


class UserLookup(Protocol[UserT_co]):
    """Where a token's user is read from: the seam between the token rules here and the
    queries. Two implementations: `OrmUserLookup` (an AsyncSession: writes, and reads on
    SQLite) and `app.repositories.live_users.LiveUserReader` (PostgreSQL's read-only
    routes: one prepared statement on the driver)."""

    async def user_with_auth_session_state(
        self, user_id: int, auth_session_id: uuid.UUID
    ) -> tuple[UserT_co | None, bool]:
        """The user and whether ``session_id`` is a live session of theirs, in one query."""
        ...

    async def user(self, user_id: int) -> UserT_co | None: ...


class OrmUserLookup:
    """`UserLookup` through the request's ORM session: the user comes back attached to it."""

    def __init__(self, db: AsyncSession) -> None:
        self._db = db

    async def user_with_auth_session_state(
        self, user_id: int, auth_session_id: uuid.UUID
    ) -> tuple[User | None, bool]:
        return await auth_sessions_repo.get_user_with_auth_session_state(
            self._db, user_id, auth_session_id
        )

    async def user(self, user_id: int) -> User | None:
        return await users_repo.get_by_id(self._db, user_id)


@dataclass(frozen=True, slots=True)
class TokenPair:
    access: IssuedToken
    refresh: IssuedToken
    auth_session_id: uuid.UUID


async def start(
    db: AsyncSession, codec: TokenCodec, user: User, origin: Origin, amr: str = "pwd"
) -> TokenPair:
    """A new session for ``user`` (a login), with the client's address and User-Agent;
    ``amr`` says how the login proved itself ("pwd", or "pwd otp")."""
    refresh_jti = new_jti()
    auth_session = await auth_sessions_repo.create(
        db,
        user.id,
        refresh_jti,
        expires_at=utcnow() + codec.lifetime("refresh"),
        ip=origin.ip,
        user_agent=origin.user_agent,
        amr=amr,
    )
    return TokenPair(
        access=codec.issue("access", user.id, auth_session.id, amr=amr),
        refresh=codec.issue("refresh", user.id, auth_session.id, jti=refresh_jti),
        auth_session_id=auth_session.id,
    )


async def refresh(
    sessionmaker: async_sessionmaker[AsyncSession],
    codec: TokenCodec,
    refresh_token: str,
    origin: Callable[[], Origin],
    rotator: auth_sessions_repo.SessionRotator | None = None,
) -> TokenPair:
    """Rotate: the presented token is spent, a new pair is issued for the same session.

    Presenting a refresh token that was already rotated is reuse: the whole family is
    revoked (kept even though the request fails), newest token included; the event is
    recorded and the account's address told.

    The one service function that opens its unit of work (`committing_db`) instead of
    being handed the request's: every client refreshes every few minutes, and on
    PostgreSQL a refresh that succeeds is one statement on the driver (``rotator``), with
    no ORM session at all (an unused request session cost 15 % of a refresh's
    instructions). One that does not, and every refresh elsewhere, is decided in a unit of
    work: committed as any request's (a reuse's revocation kept), or rolled back.
    ``origin`` is asked for only when a reuse is recorded.
    """
    claims = codec.verify(refresh_token, "refresh")
    successor_jti = new_jti()
    expires_at = utcnow() + codec.lifetime("refresh")
    if rotator is not None:
        amr = await rotator.rotate_if_user_active(
            claims.auth_session_id, claims.user_id, claims.jti, successor_jti, expires_at
        )
        if amr is not None:
            return _rotated_pair(codec, claims, amr, successor_jti)
    async with committing_db(sessionmaker) as db:
        amr = await _rotate_or_refuse(db, claims, successor_jti, expires_at, origin)
    return _rotated_pair(codec, claims, amr, successor_jti)


async def _rotate_or_refuse(
    db: AsyncSession,
    claims: TokenClaims,
    successor_jti: str,
    expires_at: datetime,
    origin: Callable[[], Origin],
) -> str:
    """The rotation in ``db``'s transaction, or the refusal: reuse (the family revoked),
    an ended session, an inactive user. The session's ``amr`` once rotated."""
    rotated = await auth_sessions_repo.rotate(
        db, claims.auth_session_id, claims.user_id, claims.jti, successor_jti, expires_at
    )
    if rotated is None:
        if await auth_sessions_repo.revoke(db, claims.auth_session_id, claims.user_id):
            audit.record(
                db,
                EventType.TOKEN_REUSE_DETECTED,
                user_id=claims.user_id,
                actor_id=None,
                origin=origin(),
                details={"session_id": str(claims.auth_session_id)},
            )
            user = await users_repo.get_by_id(db, claims.user_id)
            if user is not None:
                notices.stolen_session_ended(db, user)
            raise RefreshTokenReused()
        raise SessionRevoked()
    amr, user_is_active = rotated
    if not user_is_active:
        raise InactiveUser()  # the rotation is rolled back with the unit of work
    return amr


def _rotated_pair(codec: TokenCodec, claims: TokenClaims, amr: str, refresh_jti: str) -> TokenPair:
    return TokenPair(
        access=codec.issue("access", claims.user_id, claims.auth_session_id, amr=amr),
        refresh=codec.issue("refresh", claims.user_id, claims.auth_session_id, jti=refresh_jti),
        auth_session_id=claims.auth_session_id,
    )


async def logout(db: AsyncSession, codec: TokenCodec, refresh_token: str, origin: Origin) -> None:
    """End the session the refresh token belongs to (any generation of it); idempotent."""
    claims = codec.verify(refresh_token, "refresh")
    await end(db, claims.user_id, claims.auth_session_id, actor_id=claims.user_id, origin=origin)


async def end(
    db: AsyncSession,
    user_id: int,
    auth_session_id: uuid.UUID,
    *,
    actor_id: int,
    origin: Origin,
    listed_only: bool = False,
) -> bool:
    """End one session of the user (its tokens stop working at once); whether there was
    one to end. Recorded as ``session.ended``."""
    if not await auth_sessions_repo.revoke(db, auth_session_id, user_id, listed_only=listed_only):
        return False
    audit.record(
        db,
        EventType.SESSION_ENDED,
        user_id=user_id,
        actor_id=actor_id,
        origin=origin,
        details={"session_id": str(auth_session_id)},
    )
    return True


async def end_own(db: AsyncSession, user: User, auth_session_id: str, origin: Origin) -> None:
    """The signed-in user ends one of their sessions; 404 for an id that is not one of
    their live sessions (another user's, unknown, ended, or not an id at all)."""
    try:
        parsed = uuid.UUID(auth_session_id)
    except ValueError:
        raise AuthSessionNotFound() from None
    if not await end(db, user.id, parsed, actor_id=user.id, origin=origin, listed_only=True):
        raise AuthSessionNotFound()


async def end_all(db: AsyncSession, user_id: int, *, actor_id: int, origin: Origin) -> None:
    """Logout-all, or a superuser ending every session of a user: ``sessions.ended_all``."""
    await revoke_all(db, user_id)
    audit.record(
        db, EventType.SESSIONS_ENDED_ALL, user_id=user_id, actor_id=actor_id, origin=origin
    )


async def revoke_all(db: AsyncSession, user_id: int) -> None:
    """End every session of the user and every token issued until now (the replaced
    service's too, which have no session): logout-all, password change, deactivation."""
    await auth_sessions_repo.revoke_all_for_user(db, user_id)
    await users_repo.set_tokens_valid_after(db, user_id, utcnow())


async def live_sessions(db: AsyncSession, user_id: int) -> Sequence[AuthSession]:
    """The user's sessions that still work, newest first."""
    return await auth_sessions_repo.live_for_user(db, user_id)


async def user_from_access_token(
    db: AsyncSession,
    codec: TokenCodec,
    token: str,
    legacy_codec: LegacyTokenCodec | None = None,
) -> User:
    """401 for a bad token, an ended session or an inactive user; 404 when the user is gone.

    Our own tokens first; the Django service's SimpleJWT access tokens only when
    ``legacy_codec`` is given (LEGACY_SIMPLEJWT_SIGNING_KEY is set, and the route is one of
    the signed-in user's own) and ours did not verify. Those carry no session: they are
    accepted for imported accounts only, and end at the account's token cut-off
    (logout-all, password change, deactivation) or their (short, capped) lifetime.
    """
    return await resolve_access_token(OrmUserLookup(db), codec, token, legacy_codec)


async def resolve_access_token(
    users: UserLookup[UserT],
    codec: TokenCodec,
    token: str,
    legacy_codec: LegacyTokenCodec | None = None,
) -> UserT:
    """The rules of `user_from_access_token`, with the user read through ``users``."""
    return (await resolve_sign_in(users, codec, token, legacy_codec))[0]


# How a token signs its user in: through a session of ours (its id), or as a token of the
# replaced service (its claims).
SignInVia = uuid.UUID | LegacyTokenClaims


async def resolve_sign_in(
    users: UserLookup[UserT],
    codec: TokenCodec,
    token: str,
    legacy_codec: LegacyTokenCodec | None = None,
) -> tuple[UserT, SignInVia]:
    """`resolve_access_token`, with the token's session id, or a legacy token's claims."""
    try:
        claims = codec.verify(token, "access")
    except InvalidToken as refused:
        # An expired token of ours (signature and claims checked) says so: it is no
        # legacy token, and the client should refresh.
        if legacy_codec is None or isinstance(refused, TokenExpired):
            raise
        legacy = legacy_codec.verify(token)
        holder = _usable(await users.user(legacy.user_id))
        if not holder.imported:  # an id the Django service never gave this account
            raise InvalidToken() from None
        if not _issued_in_time(holder.tokens_valid_after, legacy.issued_at, has_auth_session=False):
            raise SessionRevoked() from None
        return holder, legacy
    user, auth_session_live = await users.user_with_auth_session_state(
        claims.user_id, claims.auth_session_id
    )
    user = _usable(user)
    if not auth_session_live or not _issued_in_time(
        user.tokens_valid_after, claims.issued_at, has_auth_session=True
    ):
        raise SessionRevoked()
    return user, claims.auth_session_id


def _issued_in_time(cutoff: datetime | None, issued_at: float, *, has_auth_session: bool) -> bool:
    """Whether a token issued at ``issued_at`` (seconds) is after the user's token cut-off.

    ``iat`` has whole seconds. One of our tokens issued in the cut-off's own second is let
    through here (a login right after a logout-all must work) and stopped by its session,
    which the cut-off ended; a legacy token has no session and must be of a later second.
    """
    if cutoff is None:
        return True
    moment = cutoff.timestamp()
    return issued_at >= math.floor(moment) if has_auth_session else issued_at > moment


def _usable(user: UserT | None) -> UserT:
    if user is None:
        raise UserNotFound()
    if not user.is_active:
        raise InactiveUser()
    return user
