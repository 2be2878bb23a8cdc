"""All SQL for password-reset tokens (one row per account at most)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession

from app.models.password_reset import PasswordResetToken
from app.models.user import User


async def replace(
    db: AsyncSession, user_id: int, token_hash: str, now: datetime, expires_at: datetime
) -> None:
    """The account's reset token is now this one: one upsert on the unique ``user_id``, so
    of two concurrent requests for an account the later write wins and only one link
    works (no check before a write to race with)."""
    values = {
        "user_id": user_id,
        "token_hash": token_hash,
        "created_at": now,
        "expires_at": expires_at,
        "used_at": None,
    }
    dialect = sqlite if db.get_bind().dialect.name == "sqlite" else postgresql
    statement = dialect.insert(PasswordResetToken).values(**values)
    await db.execute(
        statement.on_conflict_do_update(
            index_elements=[PasswordResetToken.user_id],
            set_={name: statement.excluded[name] for name in values if name != "user_id"},
        )
    )


async def get_live(
    db: AsyncSession, token_hash: str, now: datetime
) -> tuple[PasswordResetToken, User] | None:
    """The unused, unexpired token with this hash and its user."""
    row = (
        await db.execute(
            select(PasswordResetToken, User)
            .join(User, User.id == PasswordResetToken.user_id)
            .where(
                PasswordResetToken.token_hash == token_hash,
                PasswordResetToken.used_at.is_(None),
                PasswordResetToken.expires_at > now,
            )
        )
    ).first()
    return None if row is None else (row[0], row[1])


async def consume(db: AsyncSession, token_id: int, token_hash: str, now: datetime) -> bool:
    """Mark the token used, only if it still is unused, unexpired and this token (not
    replaced by a newer request). One conditional UPDATE: of concurrent confirmations
    exactly one matches the row (PostgreSQL re-checks the WHERE after the row lock;
    SQLite serialises writers)."""
    result = await db.execute(
        update(PasswordResetToken)
        .where(
            PasswordResetToken.id == token_id,
            PasswordResetToken.token_hash == token_hash,
            PasswordResetToken.used_at.is_(None),
            PasswordResetToken.expires_at > now,
        )
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    assert isinstance(result, CursorResult)
    return result.rowcount == 1


async def delete_for_user(db: AsyncSession, user_id: int) -> None:
    """Cancel the account's reset link (its password changed)."""
    await delete_for_users(db, [user_id])


async def delete_for_users(db: AsyncSession, user_ids: Sequence[int]) -> None:
    """Cancel these accounts' reset links (their passwords changed: profile, reset, a
    Django import bringing a new hash)."""
    if user_ids:
        await db.execute(
            delete(PasswordResetToken)
            .where(PasswordResetToken.user_id.in_(user_ids))
            .execution_options(synchronize_session=False)
        )
