from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime, utcnow

TOKEN_HASH_LENGTH = 64  # SHA-256, hex


class PasswordResetToken(Base):
    """The one reset link an account may have (``user_id`` is unique: a newer request
    replaces the row, so the older link is superseded by construction, races included).

    Only the token's SHA-256 is stored: a copy of the table does not let anyone reset a
    password. ``used_at`` is set by the one conditional UPDATE that consumes it; a password
    change deletes the row.
    """

    __tablename__ = "password_reset_tokens"

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
        return f"<PasswordResetToken id={self.id} user_id={self.user_id}>"
