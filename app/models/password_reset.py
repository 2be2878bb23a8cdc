from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime, utcnow

TOKEN_HASH_LENGTH = 64  # SHA-256, hex


class LinkTokenColumns:
    """The columns of an emailed link's token (reset, verification): one row per account
    (``user_id`` is unique: a newer link replaces the row, so the older one is superseded
    by construction, races included), found by the token's SHA-256 (only the hash is kept:
    a copy of the table lets nobody use a link); ``used_at`` is set by the one conditional
    UPDATE that consumes it (`app.repositories.link_tokens`)."""

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    user_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"),
        ForeignKey("users.id", ondelete="CASCADE"),
        unique=True,
    )
    token_hash: Mapped[str] = mapped_column(String(TOKEN_HASH_LENGTH), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)

    def __repr__(self) -> str:  # never the hash
        return f"<{type(self).__name__} id={self.id} user_id={self.user_id}>"


class PasswordResetToken(LinkTokenColumns, Base):
    """The one reset link an account may have (`LinkTokenColumns`); a password change
    deletes the row."""

    __tablename__ = "password_reset_tokens"
