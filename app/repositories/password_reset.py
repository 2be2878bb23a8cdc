"""All SQL for password-reset tokens (one row per account at most)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from app.models.password_reset import PasswordResetToken
from app.models.user import User
from app.repositories import link_tokens


async def replace(
    db: AsyncSession, user_id: int, token_hash: str, now: datetime, expires_at: datetime
) -> None:
    """The account's reset token is now this one (`link_tokens.replace`)."""
    values = {"user_id": user_id, "token_hash": token_hash}
    await link_tokens.replace(
        db, PasswordResetToken, {**values, "created_at": now, "expires_at": expires_at}
    )


async def get_live(
    db: AsyncSession, token_hash: str, now: datetime
) -> tuple[PasswordResetToken, User] | None:
    """The unused, unexpired token with this hash and its user."""
    return await link_tokens.get_live(db, PasswordResetToken, token_hash, now)


async def consume(db: AsyncSession, token_id: int, token_hash: str, now: datetime) -> bool:
    """Mark the token used if it still may be (`link_tokens.consume`)."""
    return await link_tokens.consume(db, PasswordResetToken, token_id, token_hash, now)


async def delete_for_user(db: AsyncSession, user_id: int) -> None:
    """Cancel the account's reset link (its password or its email changed)."""
    await delete_for_users(db, [user_id])


async def delete_for_users(db: AsyncSession, user_ids: Sequence[int]) -> None:
    """Cancel these accounts' reset links (their passwords or emails changed: profile,
    admin, reset, a Django import bringing a new hash or address)."""
    if user_ids:
        await db.execute(
            delete(PasswordResetToken)
            .where(PasswordResetToken.user_id.in_(user_ids))
            .execution_options(synchronize_session=False)
        )
