"""All SQL for the users aggregate."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, or_, select, text, update
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


# Bulk operations for imports: one statement per batch, never a round trip per row.
_USERS = cast(Table, User.__table__)


async def id_username_email(session: AsyncSession) -> list[tuple[int, str, str]]:
    result = await session.execute(select(User.id, User.username, User.email))
    return [(row.id, row.username, row.email) for row in result]


async def rows_in_id_range(session: AsyncSession, low: int, high: int) -> dict[int, dict[str, Any]]:
    """Column values (not ORM objects) of the users with ``low <= id <= high``, by id."""
    table = _USERS
    result = await session.execute(select(*table.c).where(table.c.id.between(low, high)))
    return {row.id: dict(row._mapping) for row in result}


async def insert_many(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    """One Core executemany (the ORM's bulk insert runs a statement per few rows on SQLite)."""
    if rows:
        await session.execute(insert(_USERS), list(rows))


async def update_many(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    """Update by primary key (each mapping holds ``id`` and every other column), as one
    executemany."""
    if not rows:
        return
    table = _USERS
    statement = (
        update(table)
        .where(table.c.id == bindparam("key_id", type_=table.c.id.type))
        .values(
            {c.name: bindparam(f"new_{c.name}", type_=c.type) for c in table.c if c.name != "id"}
        )
    )
    await session.execute(
        statement,
        [{f"new_{k}" if k != "id" else "key_id": v for k, v in row.items()} for row in rows],
    )


async def reset_id_sequence(session: AsyncSession) -> None:
    """After inserting explicit ids: the next generated id is past the highest one.

    PostgreSQL only; SQLite's INTEGER PRIMARY KEY already continues after max(id).
    """
    if session.get_bind().dialect.name != "postgresql":
        return
    await session.execute(
        text(
            "SELECT setval(pg_get_serial_sequence('users', 'id'), "
            "(SELECT COALESCE(MAX(id), 0) + 1 FROM users), false)"
        )
    )
