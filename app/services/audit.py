"""The audit trail: what happened to an account, who did it, from where.

`record` adds an event to the caller's transaction, so it is written exactly when the
change it records is (a rolled-back request records nothing). A failed or throttled login
changes nothing, so its event is the only write of its request, which the error commits
(`AppError.keeping_changes`).

Details name things, never hold them: field names (``{"fields": ["first_name"]}``), flag
values of admin changes, a session id; never a password, hash, token or a profile value.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.models.audit_event import IP_MAX, REQUEST_ID_MAX, USER_AGENT_MAX, AuditEvent
from app.models.base import utcnow
from app.repositories import audit_events as audit_repo


class EventType(StrEnum):
    USER_REGISTERED = "user.registered"
    LOGIN_SUCCEEDED = "login.succeeded"
    LOGIN_FAILED = "login.failed"
    LOGIN_THROTTLED = "login.throttled"
    TOKEN_REUSE_DETECTED = "token.reuse_detected"  # noqa: S105
    SESSION_ENDED = "session.ended"
    SESSIONS_ENDED_ALL = "sessions.ended_all"
    PASSWORD_CHANGED = "password.changed"  # noqa: S105
    PASSWORD_RESET_REQUESTED = "password.reset_requested"  # noqa: S105
    PASSWORD_RESET_COMPLETED = "password.reset_completed"  # noqa: S105
    EMAIL_CHANGED = "email.changed"
    EMAIL_VERIFIED = "email.verified"
    PROFILE_UPDATED = "profile.updated"
    AVATAR_CHANGED = "avatar.changed"
    ACCOUNT_DELETED = "account.deleted"
    ADMIN_USER_UPDATED = "admin.user_updated"
    ADMIN_USER_DELETED = "admin.user_deleted"
    LEGACY_TOKEN_USED = "legacy_token.used"  # noqa: S105
    MFA_ENABLED = "mfa.enabled"
    MFA_DISABLED = "mfa.disabled"
    MFA_RESET_BY_ADMIN = "mfa.reset_by_admin"
    MFA_RECOVERY_CODE_USED = "mfa.recovery_code_used"
    MFA_FAILED = "mfa.failed"


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a change came from: the client's address, its User-Agent and the request id.

    Plain data, built from the request by `app.dependencies.get_origin`; `Origin()` for a
    change made from the command line.
    """

    ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None

    @classmethod
    def of(cls, ip: str | None, user_agent: str | None, request_id: str | None) -> Origin:
        """Clamped to the columns: an address that is not an IP address is dropped, a
        User-Agent truncated, a request id (already checked by the middleware) bounded."""
        return cls(
            ip=normalise_ip(ip),
            user_agent=user_agent[:USER_AGENT_MAX] if user_agent else None,
            request_id=request_id[:REQUEST_ID_MAX] if request_id else None,
        )


def normalise_ip(value: str | None) -> str | None:
    """The address in its canonical text (``::ffff:1.2.3.4`` as ``1.2.3.4``), or None."""
    if not value:
        return None
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    text = str(address)
    return text if len(text) <= IP_MAX else None


def record(
    db: AsyncSession,
    event_type: EventType,
    *,
    user_id: int | None,
    actor_id: int | None,
    origin: Origin,
    details: Mapping[str, Any] | None = None,
) -> AuditEvent:
    """Add an event to ``db``'s transaction (written by its next flush or commit)."""
    return audit_repo.add(
        db,
        AuditEvent(
            type=event_type.value,
            at=utcnow(),
            user_id=user_id,
            actor_id=actor_id,
            ip=origin.ip,
            user_agent=origin.user_agent,
            request_id=origin.request_id,
            details=dict(details or {}),
        ),
    )


def fields_changed(names: Sequence[str]) -> dict[str, list[str]]:
    """``details`` of a change: which fields, never their values."""
    return {"fields": sorted(names)}


PURGE_BATCH = 5_000


async def purge(
    sessionmaker: async_sessionmaker[AsyncSession],
    retention: timedelta,
    *,
    now: datetime | None = None,
    batch: int = PURGE_BATCH,
) -> int:
    """Delete the events older than ``retention``, ``batch`` at a time, each batch in a
    transaction of its own (short locks, bounded undo); the number deleted."""
    cutoff = (now or utcnow()) - retention
    deleted = 0
    while True:
        async with sessionmaker() as db, db.begin():
            count = await audit_repo.delete_before(db, cutoff, limit=batch)
        deleted += count
        if count < batch:
            return deleted


@dataclass(frozen=True, slots=True)
class EventPage:
    events: list[AuditEvent]
    next_cursor: str | None


async def events(
    db: AsyncSession, where: audit_repo.EventFilter, *, limit: int, before_id: int | None
) -> EventPage:
    """A page of events newest first; ``next_cursor`` is set when older ones remain."""
    found = await audit_repo.page(db, where, limit=limit + 1, before_id=before_id)
    more = len(found) > limit
    found = found[:limit]
    return EventPage(found, str(found[-1].id) if more else None)
