from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime, utcnow
from app.models.password_reset import TOKEN_HASH_LENGTH
from app.models.user import EMAIL_MAX


class EmailVerificationToken(Base):
    """The one verification link an account may have, as `PasswordResetToken` (unique
    ``user_id``: a newer link replaces the row; only the SHA-256 is stored).

    ``email`` is the address the link was sent to: the token verifies only while the
    account still has exactly that address, so a link to an old address verifies nothing
    (an email change also replaces the row with the new address's link).
    """

    __tablename__ = "email_verification_tokens"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    user_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"),
        ForeignKey("users.id", ondelete="CASCADE"),
        unique=True,
    )
    token_hash: Mapped[str] = mapped_column(String(TOKEN_HASH_LENGTH), unique=True)
    email: Mapped[str] = mapped_column(String(EMAIL_MAX))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)

    def __repr__(self) -> str:  # never the hash
        return f"<EmailVerificationToken id={self.id} user_id={self.user_id}>"
