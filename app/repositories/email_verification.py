"""All SQL for email-verification tokens (one row per account at most)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession

from app.models.email_verification import EmailVerificationToken
from app.models.user import User


async def replace(
    db: AsyncSession,
    user_id: int,
    token_hash: str,
    email: str,
    now: datetime,
    expires_at: datetime,
) -> None:
    """The account's verification token is now this one, for ``email`` (one upsert on the
    unique ``user_id``, as `password_reset.replace`: the later of two writes wins)."""
    values = {
        "user_id": user_id,
        "token_hash": token_hash,
        "email": email,
        "created_at": now,
        "expires_at": expires_at,
        "used_at": None,
    }
    dialect = sqlite if db.get_bind().dialect.name == "sqlite" else postgresql
    statement = dialect.insert(EmailVerificationToken).values(**values)
    await db.execute(
        statement.on_conflict_do_update(
            index_elements=[EmailVerificationToken.user_id],
            set_={name: statement.excluded[name] for name in values if name != "user_id"},
        )
    )


async def get_live(
    db: AsyncSession, token_hash: str, now: datetime
) -> tuple[EmailVerificationToken, User] | None:
    """The unused, unexpired token with this hash and its user (whatever its address)."""
    row = (
        await db.execute(
            select(EmailVerificationToken, User)
            .join(User, User.id == EmailVerificationToken.user_id)
            .where(
                EmailVerificationToken.token_hash == token_hash,
                EmailVerificationToken.used_at.is_(None),
                EmailVerificationToken.expires_at > now,
            )
        )
    ).first()
    return None if row is None else (row[0], row[1])


async def consume(db: AsyncSession, token_id: int, token_hash: str, now: datetime) -> bool:
    """Mark the token used if it still is unused, unexpired and this token: one conditional
    UPDATE, so of concurrent uses (or a use racing a newer link) exactly one wins."""
    result = await db.execute(
        update(EmailVerificationToken)
        .where(
            EmailVerificationToken.id == token_id,
            EmailVerificationToken.token_hash == token_hash,
            EmailVerificationToken.used_at.is_(None),
            EmailVerificationToken.expires_at > now,
        )
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    assert isinstance(result, CursorResult)
    return result.rowcount == 1


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
