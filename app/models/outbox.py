from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from sqlalchemy import JSON, BigInteger, CheckConstraint, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime, utcnow

RECIPIENT_MAX = 254  # the longest address SMTP carries (RFC 5321 path, less the brackets)
KIND_MAX = 32
ERROR_MAX = 500

# pending: to be delivered (next_attempt_at says when); sent: accepted by the backend;
# failed: given up (a day of retries, or refused for good); discarded: EMAIL_BACKEND=off.
OutboxStatus = Literal["pending", "sent", "failed", "discarded"]
OUTBOX_STATUSES: tuple[OutboxStatus, ...] = ("pending", "sent", "failed", "discarded")


class OutboxEmail(Base):
    """One email to deliver, written in the transaction of the change that causes it and
    delivered after the commit by the relay (app/mail/relay.py).

    ``context`` holds the template values that may be kept (names, times); ``secret`` the
    ones that must not outlive delivery (a link holding a token): it is set to NULL once the
    message is sent, given up or discarded. ``next_attempt_at`` is when the relay may try it
    next; a relay that takes the row moves it forward by a lease, so no other relay takes it
    while it is being sent. NULL once the row is finished.
    """

    __tablename__ = "email_outbox"
    __table_args__ = (
        CheckConstraint(
            "status IN ({})".format(", ".join(f"'{status}'" for status in OUTBOX_STATUSES)),
            name="status",
        ),
        # The relay's query: pending rows by due time.
        Index(None, "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    kind: Mapped[str] = mapped_column(String(KIND_MAX))
    recipient: Mapped[str] = mapped_column(String(RECIPIENT_MAX))
    context: Mapped[dict[str, Any]] = mapped_column(JSON())
    secret: Mapped[dict[str, Any] | None] = mapped_column(JSON(), default=None)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer(), default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    # The last failed attempt's reason: an exception type, an SMTP code and the server's
    # reply, with the message's secret values and its recipient replaced (never a token).
    last_error: Mapped[str | None] = mapped_column(String(ERROR_MAX), default=None)

    def __repr__(self) -> str:  # never the secret, nor the address
        return f"<OutboxEmail id={self.id} kind={self.kind!r} status={self.status!r}>"
