"""All SQL for email-verification tokens (one row per account at most)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, func, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession

from app.models.email_verification import EmailVerificationToken
from app.models.user import User
from app.repositories import link_tokens


async def replace(
    db: AsyncSession,
    user_id: int,
    token_hash: str,
    email: str,
    now: datetime,
    expires_at: datetime,
) -> None:
    """The account's verification token is now this one, for ``email``
    (`link_tokens.replace`: the later of two writes wins)."""
    values = {"user_id": user_id, "token_hash": token_hash, "email": email}
    await link_tokens.replace(
        db, EmailVerificationToken, {**values, "created_at": now, "expires_at": expires_at}
    )


async def get_live(
    db: AsyncSession, token_hash: str, now: datetime
) -> tuple[EmailVerificationToken, User] | None:
    """The unused, unexpired token with this hash and its user (whatever its address)."""
    return await link_tokens.get_live(db, EmailVerificationToken, token_hash, now)


async def consume(db: AsyncSession, token_id: int, token_hash: str, now: datetime) -> bool:
    """Mark the token used if it still may be (`link_tokens.consume`)."""
    return await link_tokens.consume(db, EmailVerificationToken, token_id, token_hash, now)


async def delete_for_user(db: AsyncSession, user_id: int) -> None:
    """Cancel the account's verification link (its address was verified otherwise)."""
    await db.execute(
        delete(EmailVerificationToken)
        .where(EmailVerificationToken.user_id == user_id)
        .execution_options(synchronize_session=False)
    )


async def mark_verified(db: AsyncSession, user_id: int, email: str, now: datetime) -> bool:
    """Verify the account's address if it still is ``email`` (the one the link went to).

    One conditional UPDATE taken before the token's: an email change locks the user row
    first too, so the two wait for each other instead of deadlocking, and on PostgreSQL a
    change committed meanwhile makes the re-checked WHERE miss. An earlier verification
    time is kept."""
    result = await db.execute(
        update(User)
        .where(User.id == user_id, User.email == email)
        .values(email_verified_at=func.coalesce(User.email_verified_at, now))
        .execution_options(synchronize_session=False)
    )
    assert isinstance(result, CursorResult)
    return result.rowcount == 1
