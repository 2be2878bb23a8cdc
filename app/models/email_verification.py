from __future__ import annotations

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base
from app.models.password_reset import LinkTokenColumns
from app.models.user import EMAIL_MAX


class EmailVerificationToken(LinkTokenColumns, Base):
    """The one verification link an account may have (`LinkTokenColumns`).

    ``email`` is the address the link was sent to: the token verifies only while the
    account still has exactly that address, so a link to an old address verifies nothing
    (an email change also replaces the row with the new address's link).
    """

    __tablename__ = "email_verification_tokens"

    email: Mapped[str] = mapped_column(String(EMAIL_MAX))
