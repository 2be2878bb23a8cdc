"""Bulk reads and writes of the users for the Django import: one statement per batch,
never a round trip per row."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, select, text, update
from sqlalchemy import delete as sa_delete
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.identifiers import claimed_identifiers
from app.models.login_identifier import LoginIdentifier
from app.models.user import User

_USERS = cast(Table, User.__table__)


async def ids_usernames_imported(db: AsyncSession) -> list[tuple[int, str, bool]]:
    result = await db.execute(select(User.id, User.username, User.imported))
    return [(row.id, row.username, row.imported) for row in result]


async def identifier_owners(db: AsyncSession) -> dict[str, int]:
    """Every claimed login identifier (digest) and the id of the account holding it."""
    result = await db.execute(select(LoginIdentifier.identifier, LoginIdentifier.user_id))
    return {row.identifier: row.user_id for row in result}


async def rows_in_id_range(db: AsyncSession, low: int, high: int) -> dict[int, dict[str, Any]]:
    """Column values (not ORM objects) of the users with ``low <= id <= high``, by id."""
    table = _USERS
    result = await db.execute(select(*table.c).where(table.c.id.between(low, high)))
    return {row.id: dict(row._mapping) for row in result}


async def insert_many(db: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    """One Core executemany (the ORM's bulk insert runs a statement per few rows on SQLite)."""
    if rows:
        await db.execute(insert(_USERS), list(rows))


async def update_many(db: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    """Update by primary key (each mapping holds ``id`` and the same other columns), as one
    executemany."""
    if not rows:
        return
    table = _USERS
    columns = [table.c[name] for name in rows[0] if name != "id"]
    statement = (
        update(table)
        .where(table.c.id == bindparam("key_id", type_=table.c.id.type))
        .values({c.name: bindparam(f"new_{c.name}", type_=c.type) for c in columns})
    )
    await db.execute(
        statement,
        [{f"new_{k}" if k != "id" else "key_id": v for k, v in row.items()} for row in rows],
    )


async def set_emails_verified(
    db: AsyncSession, user_ids: Sequence[int], verified_at: datetime | None
) -> None:
    """Mark these imported accounts' addresses verified at ``verified_at`` (an earlier
    verification is kept), or unverified (None)."""
    if not user_ids:
        return
    table = _USERS
    statement = update(table).where(table.c.id.in_(user_ids), table.c.imported.is_(True))
    if verified_at is not None:
        statement = statement.where(table.c.email_verified_at.is_(None))
    await db.execute(statement.values(email_verified_at=verified_at))


async def reclaim_identifiers_many(db: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    """`claim_identifiers` for many users at once (``id``, ``username``, ``email`` each): their
    claims are replaced; a clash raises IntegrityError (the import checks for them first)."""
    if not rows:
        return
    ids = [row["id"] for row in rows]
    await db.execute(sa_delete(LoginIdentifier).where(LoginIdentifier.user_id.in_(ids)))
    await db.execute(
        insert(LoginIdentifier),
        [
            {"identifier": digest, "user_id": row["id"]}
            for row in rows
            for digest in claimed_identifiers(row["username"], row["email"])
        ],
    )


async def move_id_counter_past(db: AsyncSession, floor: int) -> None:
    """The next generated id is above ``floor``, above every id in the table and above every
    id already handed out (never moved back: a deleted user's id is never reused)."""
    if db.get_bind().dialect.name == "postgresql":
        sequence = await db.scalar(text("SELECT pg_get_serial_sequence('users', 'id')"))
        # The sequence's next value: last_value, or the one after it once it was handed out
        # (pg_sequence_last_value() is NULL after setval(..., false): not enough here).
        handed_out = (
            f"(SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END "  # noqa: S608
            f"FROM {sequence})"  # the database's own quoted name
        )
        await db.execute(
            text(
                f"SELECT setval(:sequence, GREATEST(:floor, "  # noqa: S608
                f"(SELECT COALESCE(MAX(id), 0) FROM users), {handed_out}) + 1, false)"
            ),
            {"sequence": sequence, "floor": floor},
        )
        return
    # SQLite's AUTOINCREMENT hands out max(sqlite_sequence.seq, MAX(rowid)) + 1.
    result = await db.execute(
        text("UPDATE sqlite_sequence SET seq = MAX(seq, :floor) WHERE name = 'users'"),
        {"floor": floor},
    )
    assert isinstance(result, CursorResult)
    if result.rowcount == 0:
        await db.execute(
            text("INSERT INTO sqlite_sequence (name, seq) VALUES ('users', :floor)"),
            {"floor": floor},
        )
