"""All SQL for the users aggregate."""

from __future__ import annotations

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import EmailTaken, UsernameTaken
from app.models.user import User


async def get_by_id(session: AsyncSession, user_id: int) -> User | None:
    return await session.get(User, user_id)


async def get_by_login(session: AsyncSession, identifier: str) -> User | None:
    """The user whose username is ``identifier``, else whose email is (usernames may hold '@')."""
    email = identifier.strip().lower()
    rows = await session.scalars(
        select(User).where(or_(User.username == identifier, User.email == email)).limit(2)
    )
    candidates = list(rows)
    for user in candidates:
        if user.username == identifier:
            return user
    return candidates[0] if candidates else None


async def find_conflict(session: AsyncSession, username: str, email: str) -> User | None:
    return await session.scalar(
        select(User).where(or_(User.username == username, User.email == email)).limit(1)
    )


async def add(session: AsyncSession, user: User) -> User:
    """Insert and flush; a unique-constraint race becomes UsernameTaken or EmailTaken."""
    session.add(user)
    try:
        await session.flush()
    except IntegrityError as exc:
        raise _conflict_error(exc) from None
    return user


def _conflict_error(exc: IntegrityError) -> UsernameTaken | EmailTaken:
    # SQLite: "UNIQUE constraint failed: users.email"; PostgreSQL: "uq_users_email".
    message = str(exc.orig)
    if "email" in message:
        return EmailTaken()
    if "username" in message:
        return UsernameTaken()
    raise exc
