"""Registration and authentication rules."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.core import metrics
from app.core.config import Settings
from app.core.errors import (
    EmailNotVerified,
    InvalidCredentials,
    PasswordRejected,
    TooManyRequests,
)
from app.core.password_policy import password_problems, user_attributes
from app.core.security import PasswordHasher, TokenCodec
from app.models.base import utcnow
from app.models.user import User
from app.repositories import users as users_repo
from app.schemas.auth import RegisterRequest
from app.services import auth_sessions, email_verification
from app.services.throttle import Throttle, account_key, unknown_account_key


async def register(db: AsyncSession, hasher: PasswordHasher, data: RegisterRequest) -> User:
    problems = password_problems(
        data.password,
        user_attributes(data.username, data.email, data.first_name, data.last_name),
    )
    if problems:
        raise PasswordRejected(problems)
    await users_repo.check_identifiers_free(db, data.username, data.email)
    user = User(
        username=data.username,
        email=data.email,
        password=await hasher.hash(data.password),
        first_name=data.first_name,
        last_name=data.last_name,
        number_phone=data.number_phone,
    )
    return await users_repo.add(db, user)


async def sign_up(
    db: AsyncSession,
    settings: Settings,
    hasher: PasswordHasher,
    throttle: Throttle,
    data: RegisterRequest,
    client_address: str,
) -> User:
    """Registration from the API: counted per client address, then ``register``; a
    verification link goes to the new address in the same transaction."""
    await throttle.register_attempt(client_address)
    user = await register(db, hasher, data)
    await email_verification.send_link(db, settings, user)
    return user


async def login(
    db: AsyncSession,
    hasher: PasswordHasher,
    codec: TokenCodec,
    throttle: Throttle,
    identifier: str,
    password: str,
    client_address: str,
    *,
    require_verified_email: bool = False,
) -> auth_sessions.TokenPair:
    """Throttle, authenticate, start a session.

    The attempt is counted before the password is checked, so parallel guesses cannot slip
    through between a check and a count; once the address, the (identifier, address) pair
    or the account's ceiling is out of attempts even the right password gets 429. A success
    clears the pair's count. Unknown user, wrong password and inactive user fail alike, at
    the same cost. With ``require_verified_email``, the right password of an account whose
    address is unverified is a 403 (after the throttle's success: it was no guess).
    """
    try:
        await throttle.login_attempt(identifier, client_address)
        user = await users_repo.get_by_login(db, identifier)
        account = account_key(user.id) if user is not None else unknown_account_key(identifier)
        await throttle.account_attempt(account, client_address)
    except TooManyRequests:
        metrics.record_login("throttled")
        raise
    check = await hasher.verify(password, user.password if user is not None else None)
    if user is None or not check.valid or not user.is_active:
        metrics.record_login("failed")
        raise InvalidCredentials()
    await throttle.login_accepted(identifier, account, client_address)
    if require_verified_email and user.email_verified_at is None:
        metrics.record_login("failed")
        raise EmailNotVerified()
    if check.new_hash is not None:
        user.password = check.new_hash  # Django hash or old parameters: upgrade to argon2id
    user.last_login = utcnow()
    await db.flush()
    pair = await auth_sessions.start(db, codec, user)
    metrics.record_login("succeeded")
    return pair
