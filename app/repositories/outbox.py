"""All SQL for the email outbox (app/models/outbox.py)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession

from app.models.outbox import ERROR_MAX, OutboxEmail, OutboxStatus


@dataclass(frozen=True, slots=True)
class ClaimedEmail:
    """A row a relay has taken for one attempt. ``attempt`` is the row's ``attempts`` after
    the claim: the results are written only while it still matches, so a relay whose lease
    ran out cannot overwrite what a later attempt recorded."""

    id: int
    kind: str
    recipient: str
    context: dict[str, Any]
    secret: dict[str, Any]
    attempt: int
    created_at: datetime


def add(
    db: AsyncSession,
    *,
    kind: str,
    recipient: str,
    context: Mapping[str, Any],
    secret: Mapping[str, Any] | None,
    now: datetime,
) -> OutboxEmail:
    """Add a pending row, due at once, to the session (written by its next flush)."""
    row = OutboxEmail(
        kind=kind,
        recipient=recipient,
        context=dict(context),
        secret=dict(secret) if secret else None,
        status="pending",
        attempts=0,
        next_attempt_at=now,
        created_at=now,
    )
    db.add(row)
    return row


async def claim_due(
    db: AsyncSession, *, now: datetime, lease_until: datetime, limit: int
) -> list[ClaimedEmail]:
    """Take up to ``limit`` pending rows due at ``now``: count the attempt and move their
    ``next_attempt_at`` to ``lease_until``, so no relay takes them again before then.

    One statement. On PostgreSQL the rows are picked in a materialised CTE that locks them
    and skips those another relay's claim has locked (``FOR UPDATE SKIP LOCKED``):
    concurrent relays take different rows and never wait for each other; the UPDATE checks
    the conditions again on the locked row, so a row claimed and committed meanwhile is not
    taken twice. (As a plain ``IN (sub-select ... LIMIT n)`` the planner may run the
    sub-select again for each row, and the claim took every due row whatever ``limit``:
    MATERIALIZED runs it once.) SQLite has one writer at a time and runs the statement as
    a unit.
    """
    due = (
        select(OutboxEmail.id)
        .where(OutboxEmail.status == "pending", OutboxEmail.next_attempt_at <= now)
        .order_by(OutboxEmail.next_attempt_at, OutboxEmail.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .cte("due")
        .prefix_with("MATERIALIZED", dialect="postgresql")
    )
    result = await db.execute(
        update(OutboxEmail)
        .where(
            OutboxEmail.id.in_(select(due.c.id)),
            OutboxEmail.status == "pending",
            OutboxEmail.next_attempt_at <= now,
        )
        .values(attempts=OutboxEmail.attempts + 1, next_attempt_at=lease_until, last_attempt_at=now)
        .returning(
            OutboxEmail.id,
            OutboxEmail.kind,
            OutboxEmail.recipient,
            OutboxEmail.context,
            OutboxEmail.secret,
            OutboxEmail.attempts,
            OutboxEmail.created_at,
        )
        .execution_options(synchronize_session=False)
    )
    claimed = [
        ClaimedEmail(
            id=row.id,
            kind=row.kind,
            recipient=row.recipient,
            context=row.context,
            secret=row.secret or {},
            attempt=row.attempts,
            created_at=row.created_at,
        )
        for row in result
    ]
    return sorted(claimed, key=lambda email: email.id)


async def finish(
    db: AsyncSession,
    email: ClaimedEmail,
    *,
    status: OutboxStatus,
    now: datetime,
    error: str | None = None,
) -> bool:
    """Record the end of a claimed row (sent, failed or discarded) and erase its secret.
    False when the claim is no longer this relay's (another attempt has begun since)."""
    values: dict[str, Any] = {"status": status, "next_attempt_at": None, "secret": None}
    if status == "sent":
        values["sent_at"] = now
    if error is not None:
        values["last_error"] = error[:ERROR_MAX]
    return await _update_claimed(db, email, values)


async def reschedule(
    db: AsyncSession, email: ClaimedEmail, *, next_attempt_at: datetime, error: str
) -> bool:
    """Leave a claimed row pending, due again at ``next_attempt_at``."""
    return await _update_claimed(
        db, email, {"next_attempt_at": next_attempt_at, "last_error": error[:ERROR_MAX]}
    )


async def _update_claimed(db: AsyncSession, email: ClaimedEmail, values: dict[str, Any]) -> bool:
    result = await db.execute(
        update(OutboxEmail)
        .where(
            OutboxEmail.id == email.id,
            OutboxEmail.status == "pending",
            OutboxEmail.attempts == email.attempt,
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    assert isinstance(result, CursorResult)
    return result.rowcount == 1


async def backlog(db: AsyncSession) -> tuple[int, datetime | None]:
    """How many rows are pending, and when the earliest of them is due."""
    row = (
        await db.execute(
            select(func.count(), func.min(OutboxEmail.next_attempt_at)).where(
                OutboxEmail.status == "pending"
            )
        )
    ).one()
    count: int = row[0]
    earliest: datetime | None = row[1]  # MIN() keeps the column's type: UTC-aware
    return count, earliest
