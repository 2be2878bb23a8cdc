"""The SQL both kinds of emailed-link token share (password reset, email verification):
one row per account, found by the token's hash, consumed by one conditional UPDATE."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession

from app.models.email_verification import EmailVerificationToken
from app.models.password_reset import PasswordResetToken
from app.models.user import User

Token = TypeVar("Token", PasswordResetToken, EmailVerificationToken)


async def replace(db: AsyncSession, model: type[Token], values: dict[str, Any]) -> None:
    """The account's token is now this one: one upsert on the unique ``user_id``, so of two
    concurrent requests for an account the later write wins and only one link works (no
    check before a write to race with)."""
    values = {**values, "used_at": None}
    dialect = sqlite if db.get_bind().dialect.name == "sqlite" else postgresql
    statement = dialect.insert(model).values(**values)
    await db.execute(
        statement.on_conflict_do_update(
            index_elements=[model.user_id],
            set_={name: statement.excluded[name] for name in values if name != "user_id"},
        )
    )


async def get_live(
    db: AsyncSession, model: type[Token], token_hash: str, now: datetime
) -> tuple[Token, User] | None:
    """The unused, unexpired token with this hash and its user."""
    row = (
        await db.execute(
            select(model, User)
            .join(User, User.id == model.user_id)
            .where(model.token_hash == token_hash, model.used_at.is_(None), model.expires_at > now)
        )
    ).first()
    return None if row is None else (row[0], row[1])


async def consume(
    db: AsyncSession, model: type[Token], token_id: int, token_hash: str, now: datetime
) -> bool:
    """Mark the token used, only if it still is unused, unexpired and this token (not
    replaced by a newer request). One conditional UPDATE: of concurrent uses exactly one
    matches the row (PostgreSQL re-checks the WHERE after the row lock; SQLite serialises
    writers)."""
    result = await db.execute(
        update(model)
        .where(
            model.id == token_id,
            model.token_hash == token_hash,
            model.used_at.is_(None),
            model.expires_at > now,
        )
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    assert isinstance(result, CursorResult)
    return result.rowcount == 1
