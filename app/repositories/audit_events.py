"""All SQL for the audit trail."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession

from app.models.audit_event import AuditEvent


def add(db: AsyncSession, event: AuditEvent) -> AuditEvent:
    db.add(event)
    return event


@dataclass(frozen=True, slots=True)
class EventFilter:
    """What the staff's event search narrows by; None means any."""

    user_id: int | None = None
    type: str | None = None
    ip: str | None = None
    since: datetime | None = None
    until: datetime | None = None


async def page(
    db: AsyncSession, where: EventFilter, *, limit: int, before_id: int | None
) -> list[AuditEvent]:
    """Events newest first (by id), ``limit`` of them, older than ``before_id``.

    Keyset pagination: each page is an index range scan from where the last one ended
    (``(user_id, id)``, ``(ip, id)``, ``(type, id)`` or the primary key), whatever the depth.
    """
    query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if before_id is not None:
        query = query.where(AuditEvent.id < before_id)
    if where.user_id is not None:
        query = query.where(AuditEvent.user_id == where.user_id)
    if where.type is not None:
        query = query.where(AuditEvent.type == where.type)
    if where.ip is not None:
        query = query.where(AuditEvent.ip == where.ip)
    if where.since is not None:
        query = query.where(AuditEvent.at >= where.since)
    if where.until is not None:
        query = query.where(AuditEvent.at < where.until)
    return list((await db.scalars(query)).all())


async def delete_before(db: AsyncSession, moment: datetime, *, limit: int) -> int:
    """Delete up to ``limit`` of the oldest events from before ``moment``; how many."""
    oldest = (
        select(AuditEvent.id).where(AuditEvent.at < moment).order_by(AuditEvent.id).limit(limit)
    )
    result = await db.execute(
        delete(AuditEvent)
        .where(AuditEvent.id.in_(oldest.scalar_subquery()))
        .execution_options(synchronize_session=False)
    )
    assert isinstance(result, CursorResult)
    return result.rowcount
