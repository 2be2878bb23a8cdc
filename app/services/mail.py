"""Email from the request path: messages are outbox rows written in the caller's
transaction, delivered after the commit by the relay (app/mail/relay.py)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import after_commit
from app.mail.messages import MailKind, TemplateValue, check_values
from app.mail.relay import wake_relays
from app.models.base import utcnow
from app.models.outbox import RECIPIENT_MAX, OutboxEmail
from app.repositories import outbox


def enqueue(
    db: AsyncSession,
    *,
    kind: MailKind,
    to: str,
    context: Mapping[str, TemplateValue] | None = None,
    secret: Mapping[str, TemplateValue] | None = None,
    now: datetime | None = None,
) -> OutboxEmail:
    """Add one email to the outbox in ``db``'s transaction; nothing else happens now.

    The row is written by the caller's flush or commit, so the message exists exactly when
    the change that causes it does (a rolled-back request sends nothing). Once the request's
    session commits (`app.core.db.get_db`), this process's relay is woken and delivers
    it; a commit elsewhere (a script) is found by the relays' next poll (10 s at most).

    ``context`` and ``secret`` must hold exactly the template values the kind declares
    (`app.mail.messages.KINDS`), else ValueError. ``secret`` holds whatever must not be kept
    once the message is delivered (a link with a token): it is never logged and is erased
    from the row once the message is sent, given up or discarded.
    """
    context = dict(context or {})
    secret = dict(secret or {})
    check_values(kind, context, secret)
    if not 0 < len(to) <= RECIPIENT_MAX:
        raise ValueError(f"a recipient address takes 1 to {RECIPIENT_MAX} characters")
    row = outbox.add(
        db, kind=kind.value, recipient=to, context=context, secret=secret, now=now or utcnow()
    )
    after_commit(db, wake_relays)
    return row
