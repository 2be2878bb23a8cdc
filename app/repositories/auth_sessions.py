"""All SQL for login sessions (refresh-token families)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession

from app.models.auth_session import AuthSession
from app.models.base import utcnow
from app.models.user import User
from app.repositories.driver import DriverConnections


async def create(
    db: AsyncSession,
    user_id: int,
    refresh_jti: str,
    *,
    expires_at: datetime,
    ip: str | None,
    user_agent: str | None,
    amr: str = "pwd",
) -> AuthSession:
    auth_session = AuthSession(
        amr=amr,
        id=uuid.uuid4(),
        user_id=user_id,
        refresh_jti=refresh_jti,
        created_at=utcnow(),
        expires_at=expires_at,
        ip=ip,
        user_agent=user_agent,
    )
    db.add(auth_session)
    return auth_session


async def rotate(
    db: AsyncSession,
    auth_session_id: uuid.UUID,
    user_id: int,
    presented_jti: str,
    new_jti: str,
    expires_at: datetime,
) -> tuple[str, bool] | None:
    """Swap the family's current refresh token id, only if ``presented_jti`` is still current.

    One conditional UPDATE: of concurrent refreshes with the same token, exactly one
    matches the row (PostgreSQL re-checks the WHERE after the row lock; SQLite serialises
    writers), so there are never two valid successors. The session's ``amr`` and whether
    the user is active when it was rotated (read by the same statement: no second round
    trip, no ORM load of the user), None when not.
    """
    user_is_active = select(User.is_active).where(User.id == user_id).scalar_subquery()
    result = await db.execute(
        update(AuthSession)
        .where(
            AuthSession.id == auth_session_id,
            AuthSession.user_id == user_id,
            AuthSession.refresh_jti == presented_jti,
            AuthSession.revoked_at.is_(None),
        )
        .values(refresh_jti=new_jti, refreshed_at=utcnow(), expires_at=expires_at)
        .returning(AuthSession.amr, user_is_active)
        .execution_options(synchronize_session=False)
    )
    row = result.one_or_none()
    return None if row is None else (row[0], bool(row[1]))


class SessionRotator:
    """`rotate` for the common case, straight on the PostgreSQL driver: one prepared
    statement on an autocommit connection (`app.repositories.driver`), one round trip.

    The same conditional UPDATE, with one more condition, that the user is active: an
    autocommit statement cannot be rolled back afterwards, so it must only ever do what
    the request keeps. When it matches nothing (a spent or revoked token, an inactive or
    deleted user), the caller decides which through `rotate` in its transaction.
    """

    _ROTATE = """
    UPDATE auth_sessions
    SET refresh_jti = $4, refreshed_at = $5, expires_at = $6
    WHERE id = $1 AND user_id = $2 AND refresh_jti = $3 AND revoked_at IS NULL
      AND EXISTS (SELECT 1 FROM users WHERE users.id = $2 AND users.is_active)
    RETURNING amr
    """

    def __init__(self, connections: DriverConnections) -> None:
        self._connections = connections

    async def rotate_if_user_active(
        self,
        auth_session_id: uuid.UUID,
        user_id: int,
        presented_jti: str,
        new_jti: str,
        expires_at: datetime,
    ) -> str | None:
        """The session's ``amr`` once rotated; None when nothing was."""
        row = await self._connections.fetchrow(
            self._ROTATE, auth_session_id, user_id, presented_jti, new_jti, utcnow(), expires_at
        )
        return None if row is None else str(row[0])


async def revoke(
    db: AsyncSession, auth_session_id: uuid.UUID, user_id: int, *, listed_only: bool = False
) -> bool:
    """End the user's session unless it already ended; whether this call ended it. With
    ``listed_only``, only a session the list shows (not expired either).

    Logout and reuse detection end whatever session the token names: ``expires_at`` is
    the list's view (back-filled for older sessions by migration 0009), while the tokens
    carry their own expiry."""
    conditions = [
        AuthSession.id == auth_session_id,
        AuthSession.user_id == user_id,
        AuthSession.revoked_at.is_(None),
    ]
    if listed_only:
        conditions.append(AuthSession.expires_at > utcnow())
    result = await db.execute(
        update(AuthSession)
        .where(*conditions)
        .values(revoked_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    assert isinstance(result, CursorResult)
    return result.rowcount == 1


async def revoke_all_for_user(db: AsyncSession, user_id: int) -> int:
    result = await db.execute(
        update(AuthSession)
        .where(AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None))
        .values(revoked_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    assert isinstance(result, CursorResult)
    return result.rowcount


async def live_for_user(db: AsyncSession, user_id: int) -> Sequence[AuthSession]:
    """The user's sessions that are neither ended nor expired, newest first."""
    result = await db.scalars(
        select(AuthSession)
        .where(
            AuthSession.user_id == user_id,
            AuthSession.revoked_at.is_(None),
            AuthSession.expires_at > utcnow(),
        )
        .order_by(AuthSession.created_at.desc(), AuthSession.id)
    )
    return result.all()


async def has_any(db: AsyncSession, user_id: int) -> bool:
    """Whether the user ever signed in (a session row, ended or not, is kept)."""
    found = await db.scalar(select(AuthSession.id).where(AuthSession.user_id == user_id).limit(1))
    return found is not None


async def user_agents_seen_from(
    db: AsyncSession, user_id: int, ip: str, since: datetime, limit: int = 100
) -> Sequence[str | None]:
    """The User-Agents of the user's sessions from ``ip`` started or used since ``since``."""
    result = await db.scalars(
        select(AuthSession.user_agent)
        .where(
            AuthSession.user_id == user_id,
            AuthSession.ip == ip,
            or_(AuthSession.created_at >= since, AuthSession.refreshed_at >= since),
        )
        .order_by(AuthSession.created_at.desc())
        .limit(limit)
    )
    return result.all()


# Built once: per request only the parameters change, and SQLAlchemy's compiled cache
# serves the SQL string.
_USER_WITH_AUTH_SESSION_STATE = select(
    User,
    select(AuthSession.id)
    .where(
        AuthSession.id == bindparam("session_id", type_=AuthSession.id.type),
        AuthSession.user_id == User.id,
        AuthSession.revoked_at.is_(None),
    )
    .exists(),
).where(User.id == bindparam("user_id", type_=User.id.type))


async def get_user_with_auth_session_state(
    db: AsyncSession, user_id: int, auth_session_id: uuid.UUID
) -> tuple[User | None, bool]:
    """The user and whether ``session_id`` is a live session of theirs, in one query."""
    result = await db.execute(
        _USER_WITH_AUTH_SESSION_STATE, {"user_id": user_id, "session_id": auth_session_id}
    )
    row = result.first()
    if row is None:
        return None, False
    return row[0], bool(row[1])
