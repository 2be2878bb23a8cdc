"""Password reset by email: a link with a single-use token, then a new password.

The token is 32 random bytes (256 bits, base64url), stored only as its SHA-256. A fast hash
is enough, unlike for passwords: argon2 or PBKDF2 slow down guessing a low-entropy secret,
and 256 random bits cannot be guessed at any speed; a slow hash would only make each
request cost CPU (a lever for denial of service) and stop the confirmation from finding the
row by an index on the hash. The token travels only in the outbox row's ``secret`` part (the
link), which is erased once the message is sent; it is never logged.

A request answers the same whatever the address, and in the same time: the client waits
only for the throttle (`accept_reset_request`); the lookup and, for an account that may
reset (active, usable password), the token row and the outbox row are written after the
202 is sent (`send_reset_link`, detached from the request), in one transaction.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.config import Settings
from app.core.db import committing_db
from app.core.errors import InvalidResetToken, PasswordRejected
from app.core.password_policy import password_problems, user_attributes
from app.core.security import PasswordHasher, is_usable_password_hash
from app.mail.messages import MailKind
from app.models.base import utcnow
from app.models.user import User
from app.repositories import password_reset as tokens_repo
from app.repositories import users as users_repo
from app.services import audit, auth_sessions, mail
from app.services.audit import EventType, Origin
from app.services.throttle import Throttle, account_key

TOKEN_BYTES = 32


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def describe(duration: timedelta) -> str:
    """``1 hour``, ``30 minutes``, ``90 seconds``: how long a link works, for the email."""
    seconds = int(duration.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}" + ("s" if count != 1 else "")
    return f"{seconds} seconds"


def enqueue_link_email(
    db: AsyncSession,
    kind: MailKind,
    user: User,
    link: str,
    valid_for: timedelta,
    now: datetime,
) -> None:
    """The email of a link with a token (reset, verification): the link only in the
    outbox row's secret part, erased once sent."""
    mail.enqueue(
        db,
        kind=kind,
        to=user.email,
        context={"username": user.username, "valid_for": describe(valid_for)},
        secret={"link": link},
        now=now,
    )


def may_reset(user: User | None) -> bool:
    """Django's PasswordResetForm.get_users: an active account with a usable password."""
    return user is not None and user.is_active and is_usable_password_hash(user.password)


async def accept_reset_request(throttle: Throttle, email: str, client_address: str) -> bool:
    """The part of a reset request the client waits for: the throttle, alike for every
    address. 429 (``TooManyRequests``) only for the client address; False when the email
    is over its own limit (answered alike, nothing sent)."""
    return await throttle.password_reset_attempt(email, client_address)


async def send_reset_link(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    email: str,
    origin: Origin,
    now: datetime | None = None,
) -> None:
    """The rest of a reset request, run detached from the request (`BackgroundWork`, which
    logs a failure by its type only: there is no client to answer), so no answer's time
    tells whether the address has an account; in a transaction of its own."""
    async with committing_db(sessionmaker) as db:
        await request_reset(db, settings, email, origin, now)


async def request_reset(
    db: AsyncSession, settings: Settings, email: str, origin: Origin, now: datetime | None = None
) -> None:
    """Write a reset link for ``email`` if it is an account's that may reset; otherwise
    do nothing, after the same lookup and token drawing."""
    user = await users_repo.get_by_email(db, email)
    token = secrets.token_urlsafe(TOKEN_BYTES)
    token_hash = hash_token(token)
    if user is None or not may_reset(user):
        return
    now = now or utcnow()
    await tokens_repo.replace(db, user.id, token_hash, now, now + settings.password_reset_ttl)
    enqueue_link_email(
        db,
        MailKind.PASSWORD_RESET,
        user,
        settings.password_reset_link(token),
        settings.password_reset_ttl,
        now,
    )
    audit.record(
        db, EventType.PASSWORD_RESET_REQUESTED, user_id=user.id, actor_id=None, origin=origin
    )


async def confirm_reset(
    db: AsyncSession,
    hasher: PasswordHasher,
    throttle: Throttle,
    token: str,
    new_password: str,
    client_address: str,
    origin: Origin,
    now: datetime | None = None,
) -> None:
    """Set the password of the token's account.

    400 ``invalid_token`` for an unknown, used, superseded or expired token (or one whose
    account was since deactivated); 422 when the password breaks a registration rule (the
    token is not spent). The password is checked and hashed before the token is consumed,
    so the row lock of the consuming UPDATE is held only to the commit.
    """
    await throttle.password_reset_confirm_attempt(client_address)
    now = now or utcnow()
    token_hash = hash_token(token)
    found = await tokens_repo.get_live(db, token_hash, now)
    if found is None or not found[1].is_active:
        raise InvalidResetToken()
    row, user = found
    problems = password_problems(
        new_password,
        user_attributes(user.username, user.email, user.first_name, user.last_name),
    )
    if problems:
        raise PasswordRejected(problems, field="new_password")
    new_hash = await hasher.hash(new_password)
    if not await tokens_repo.consume(db, row.id, token_hash, now):
        raise InvalidResetToken()  # a concurrent confirmation, or a newer request, won
    user.password = new_hash
    await password_changed(
        db, user, origin, EventType.PASSWORD_RESET_COMPLETED, keep_reset_token=True
    )
    await throttle.password_reset_done(
        account_key(user.id), (user.username, user.email), client_address
    )


async def password_changed(
    db: AsyncSession,
    user: User,
    origin: Origin,
    event_type: EventType = EventType.PASSWORD_CHANGED,
    *,
    keep_reset_token: bool = False,
) -> None:
    """What every password change does besides the hash (reset, profile change): the
    account's auth sessions and tokens end, its reset link is cancelled, the change is in
    the audit trail, and a notice goes to its address, all in the same transaction."""
    await users_repo.save(db)
    audit.record(db, event_type, user_id=user.id, actor_id=user.id, origin=origin)
    await auth_sessions.revoke_all(db, user.id)
    if not keep_reset_token:  # the reset keeps its spent row: a second use is "used"
        await tokens_repo.delete_for_user(db, user.id)
    mail.enqueue(
        db, kind=MailKind.PASSWORD_CHANGED, to=user.email, context={"username": user.username}
    )
