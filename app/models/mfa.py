"""Two-factor sign-in: an account's TOTP secret, its recovery codes, and the challenges a
password login leaves for the second step."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Integer, SmallInteger, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime, utcnow

SEALED_SECRET_MAX = 200
HASH_LENGTH = 64  # SHA-256, hex

_USER_ID = BigInteger().with_variant(Integer(), "sqlite")


class TotpCredential(Base):
    """One per account that started enrolling. ``secret`` is sealed
    (`app.core.encryption`); ``confirmed_at`` is null while enrolment is pending (sign-in
    is unchanged until then). ``last_step`` is the last time step a code was accepted for:
    a code of that step or an earlier one is refused (no replay)."""

    __tablename__ = "mfa_totp"

    user_id: Mapped[int] = mapped_column(
        _USER_ID, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    secret: Mapped[str] = mapped_column(String(SEALED_SECRET_MAX))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    last_step: Mapped[int | None] = mapped_column(BigInteger(), default=None)

    def __repr__(self) -> str:  # never the secret
        return f"<TotpCredential user_id={self.user_id} confirmed={self.confirmed_at is not None}>"


class RecoveryCode(Base):
    """A single-use recovery code, stored as its SHA-256 only (60 random bits each)."""

    __tablename__ = "mfa_recovery_codes"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    user_id: Mapped[int] = mapped_column(
        _USER_ID, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    code_hash: Mapped[str] = mapped_column(String(HASH_LENGTH))
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class MfaChallenge(Base):
    """What a right password leaves when the account has a second factor: the
    ``mfa_token`` (its SHA-256 here), alive 5 minutes, used once, dead after 5 wrong
    codes."""

    __tablename__ = "mfa_challenges"

    id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True, default=uuid.uuid4)
    user_id: Mapped[int] = mapped_column(
        _USER_ID, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(HASH_LENGTH), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    failures: Mapped[int] = mapped_column(SmallInteger(), default=0)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
