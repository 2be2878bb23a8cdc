"""Security notices by email: what the account's owner must hear of at once.

Each is an outbox row in the transaction of the event it tells of (`app.services.mail`).
The password and email notices live with their changes (`password_reset.password_changed`,
`email_verification.email_changed`); these are the session ones.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.mail.messages import MailKind
from app.models.base import utcnow
from app.models.user import User
from app.repositories import auth_sessions as auth_sessions_repo
from app.services import mail
from app.services.audit import Origin

# A device counts as known when a session of the account came from the same address with
# the same User-Agent family in this window.
KNOWN_DEVICE_WINDOW = timedelta(days=90)

# Version numbers, build ids and the like: what changes when a browser updates itself.
_VERSION = re.compile(r"[/:;]?\s*v?\d[\w.\-+]*|\brv:[\w.]+")


def device_family(user_agent: str | None) -> str:
    """The User-Agent without its version numbers: ``Firefox/120.0`` and ``Firefox/121.0``
    on the same system are one family; another browser or system is another."""
    if not user_agent:
        return ""
    return " ".join(_VERSION.sub(" ", user_agent).split()).lower()


def moment(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M UTC")


async def is_new_device(db: AsyncSession, user: User, origin: Origin) -> bool:
    """Whether this sign-in comes from a device the account has not used in the last 90
    days: no session from the same address with the same User-Agent family. An account's
    first sign-in ever is not new (it follows registration or an import)."""
    if origin.ip is None:
        return False
    seen = await auth_sessions_repo.user_agents_seen_from(
        db, user.id, origin.ip, utcnow() - KNOWN_DEVICE_WINDOW
    )
    family = device_family(origin.user_agent)
    if any(device_family(agent) == family for agent in seen):
        return False
    return await auth_sessions_repo.has_any(db, user.id)


def new_sign_in(db: AsyncSession, user: User, origin: Origin) -> None:
    mail.enqueue(
        db,
        kind=MailKind.NEW_SIGN_IN,
        to=user.email,
        context={
            "username": user.username,
            "when": moment(utcnow()),
            "device": origin.user_agent or "an unknown device",
            "ip": origin.ip or "unknown",
        },
    )


def stolen_session_ended(db: AsyncSession, user: User) -> None:
    mail.enqueue(
        db,
        kind=MailKind.TOKEN_REUSE,
        to=user.email,
        context={"username": user.username, "when": moment(utcnow())},
    )
