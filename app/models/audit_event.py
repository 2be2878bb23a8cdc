from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime, utcnow

EVENT_TYPE_MAX = 40
IP_MAX = 45  # the longest textual IPv6 address (an IPv4-mapped one)
USER_AGENT_MAX = 256
REQUEST_ID_MAX = 64


class AuditEvent(Base):
    """One thing that happened to an account, written in the transaction of the change it
    records (a failed login in its own), so the trail never disagrees with the data.

    Append-only: rows are never updated, only purged after AUDIT_RETENTION_DAYS.
    ``user_id`` (the account concerned) and ``actor_id`` (who did it) are plain numbers, not
    foreign keys: the trail outlives the account. ``details`` holds field names and flag
    values, never a password, hash, token or a changed profile value.
    """

    __tablename__ = "audit_events"
    __table_args__ = (
        # Keyset pages newest first: per account, per address, per type; `at` for the
        # retention purge and the since/until filters.
        Index(None, "user_id", "id"),
        Index(None, "ip", "id"),
        Index(None, "type", "id"),
        Index(None, "at"),
        {"sqlite_autoincrement": True},  # an id is never reused, even after a purge
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    type: Mapped[str] = mapped_column(String(EVENT_TYPE_MAX))
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    user_id: Mapped[int | None] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"))
    actor_id: Mapped[int | None] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"))
    ip: Mapped[str | None] = mapped_column(String(IP_MAX))
    user_agent: Mapped[str | None] = mapped_column(String(USER_AGENT_MAX))
    request_id: Mapped[str | None] = mapped_column(String(REQUEST_ID_MAX))
    details: Mapped[dict[str, Any]] = mapped_column(JSON(), default=dict)

    def __repr__(self) -> str:
        return f"<AuditEvent id={self.id} type={self.type!r} user_id={self.user_id}>"
