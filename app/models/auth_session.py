from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Integer, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from app.models.audit_event import IP_MAX, USER_AGENT_MAX
from app.models.base import Base, UTCDateTime, utcnow

JTI_LENGTH = 32
AMR_MAX = 32


class AuthSession(Base):
    """A login: one refresh-token family. Its access tokens carry its id (``sid``).

    ``refresh_jti`` is the id of the only refresh token of the family that may still be
    used; presenting any older one is reuse, and revokes the family.
    """

    __tablename__ = "auth_sessions"

    id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True, default=uuid.uuid4)
    user_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"),
        ForeignKey("users.id", ondelete="CASCADE"),
        index=True,
    )
    refresh_jti: Mapped[str] = mapped_column(String(JTI_LENGTH))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    refreshed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ip: Mapped[str | None] = mapped_column(String(IP_MAX), default=None)
    user_agent: Mapped[str | None] = mapped_column(String(USER_AGENT_MAX), default=None)
    # How the login proved who it was (RFC 8176 ``amr`` values, space-separated): "pwd", or
    # "pwd otp" after a second factor. Its access tokens carry it, refreshed ones too.
    amr: Mapped[str] = mapped_column(String(AMR_MAX), default="pwd")
