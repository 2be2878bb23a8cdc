"""Email verification: a link with a single-use token bound to the address it went to.

Tokens are made and stored as password-reset tokens are (`app.services.password_reset`:
32 random bytes, only their SHA-256 kept, one conditional UPDATE consumes them). The row
also keeps the address the link was sent to, and a token verifies only while the account
still has exactly that address: a link to an old address verifies nothing, races included
(an email change replaces the row with the new address's link in the same transaction).

A resend request answers the same whatever the address, and in the same time, as a reset
request does: the client waits only for the throttle; the lookup and the link (only for an
active account with an unverified address) follow detached from the request.
"""

from __future__ import annotations

import secrets
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.config import Settings
from app.core.db import committing_db
from app.core.errors import InvalidResetToken
from app.mail.messages import MailKind
from app.models.base import utcnow
from app.models.user import User
from app.repositories import email_verification as tokens_repo
from app.repositories import password_reset as reset_tokens_repo
from app.repositories import users as users_repo
from app.services import audit, mail
from app.services.audit import EventType, Origin
from app.services.password_reset import TOKEN_BYTES, enqueue_link_email, hash_token
from app.services.throttle import Throttle


async def send_link(
    db: AsyncSession, settings: Settings, user: User, now: datetime | None = None
) -> None:
    """A new verification link to the account's current address (it replaces any earlier
    one), in the caller's transaction."""
    now = now or utcnow()
    token = secrets.token_urlsafe(TOKEN_BYTES)
    await tokens_repo.replace(
        db, user.id, hash_token(token), user.email, now, now + settings.email_verify_ttl
    )
    enqueue_link_email(
        db,
        MailKind.VERIFY_EMAIL,
        user,
        settings.email_verify_link(token),
        settings.email_verify_ttl,
        now,
    )


async def email_changed(
    db: AsyncSession,
    settings: Settings,
    user: User,
    old_email: str,
    *,
    actor_id: int,
    origin: Origin,
    verified: bool = False,
) -> None:
    """What every change of address does (profile, admin), after the new one is saved: it is
    unverified and gets a link (unless an administrator vouches for it: ``verified``), and
    the old address is told where the account's mail goes now. One transaction with the
    change; the new link replaces the old address's, which so verifies nothing, and a
    pending password-reset link (sent to the old address) is cancelled: whoever reads the
    old mailbox must not be able to take the account (Django's reset tokens die with the
    email too)."""
    await reset_tokens_repo.delete_for_user(db, user.id)
    audit.record(db, EventType.EMAIL_CHANGED, user_id=user.id, actor_id=actor_id, origin=origin)
    if verified:
        user.email_verified_at = utcnow()
        await users_repo.save(db)
        await tokens_repo.delete_for_user(db, user.id)
    else:
        user.email_verified_at = None
        await users_repo.save(db)
        await send_link(db, settings, user)
    mail.enqueue(
        db,
        kind=MailKind.EMAIL_CHANGED,
        to=old_email,
        context={"username": user.username, "new_email": user.email},
    )


async def set_verified(db: AsyncSession, user: User, verified: bool) -> None:
    """An administrator's decision: verified now (any pending link is cancelled), or not."""
    if verified == (user.email_verified_at is not None):
        return
    user.email_verified_at = utcnow() if verified else None
    await users_repo.save(db)
    if verified:
        await tokens_repo.delete_for_user(db, user.id)


async def accept_resend_request(throttle: Throttle, email: str, client_address: str) -> bool:
    """What the client of a resend request waits for: the throttle, alike for every address
    (429 only for the client address; False when the email is over its own limit)."""
    return await throttle.email_verify_resend_attempt(email, client_address)


async def send_resend_link(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    email: str,
    now: datetime | None = None,
) -> None:
    """The rest of a resend request, detached from the request as a reset's is
    (`password_reset.send_reset_link`), in a transaction of its own."""
    async with committing_db(sessionmaker) as db:
        await request_resend(db, settings, email, now)


async def request_resend(
    db: AsyncSession, settings: Settings, email: str, now: datetime | None = None
) -> None:
    """A new link to ``email`` if it is an active account's unverified address; otherwise
    nothing, after the same lookup and token drawing."""
    user = await users_repo.get_by_email(db, email)
    hash_token(secrets.token_urlsafe(TOKEN_BYTES))  # the work a link costs, on every path
    if user is None or not user.is_active or user.email_verified_at is not None:
        return
    await send_link(db, settings, user, now)


async def verify(
    db: AsyncSession,
    throttle: Throttle,
    token: str,
    client_address: str,
    origin: Origin,
    now: datetime | None = None,
) -> None:
    """Mark the token's address verified. 400 ``invalid_token`` for an unknown, used,
    superseded or expired token, one sent to an address the account no longer has, or one
    of a deactivated account."""
    await throttle.email_verify_attempt(client_address)
    now = now or utcnow()
    token_hash = hash_token(token)
    found = await tokens_repo.get_live(db, token_hash, now)
    if found is None:
        raise InvalidResetToken()
    row, user = found
    if not user.is_active or row.email != user.email:
        raise InvalidResetToken()
    if not await tokens_repo.mark_verified(db, user.id, row.email, now):
        raise InvalidResetToken()  # the address changed meanwhile
    if not await tokens_repo.consume(db, row.id, token_hash, now):
        raise InvalidResetToken()  # a concurrent use, or a newer link, won (rolled back)
    audit.record(db, EventType.EMAIL_VERIFIED, user_id=user.id, actor_id=user.id, origin=origin)
