from __future__ import annotations

from sqlalchemy import BigInteger, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base

DIGEST_LENGTH = 64  # hex SHA-256


class LoginIdentifier(Base):
    """An identifier a user logs in with that could also be read as another account's:
    the user's email, and their username when it holds an ``@``, compared in the form
    `app.core.identifiers.identifier_key` gives. The primary key makes one identifier
    belong to one account, race-free on every backend (a username cannot take another
    account's email, nor an email another account's username). Stored as a digest of that
    form (`identifier_digest`)."""

    __tablename__ = "login_identifiers"

    identifier: Mapped[str] = mapped_column(String(DIGEST_LENGTH), primary_key=True)
    user_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"),
        ForeignKey("users.id", ondelete="CASCADE"),
        index=True,
    )
