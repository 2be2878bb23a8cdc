"""Registration and authentication rules."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.core import metrics
from app.core.config import Settings
from app.core.encryption import DataKeys
from app.core.errors import (
    EmailNotVerified,
    InvalidCode,
    InvalidCredentials,
    InvalidMfaToken,
    MfaRequired,
    PasswordRejected,
    TooManyRequests,
)
from app.core.password_policy import password_problems, user_attributes
from app.core.security import PasswordHasher, TokenCodec
from app.models.base import utcnow
from app.models.user import User
from app.repositories import mfa as mfa_repo
from app.repositories import users as users_repo
from app.schemas.auth import RegisterRequest
from app.services import audit, auth_sessions, email_verification, mfa, notices
from app.services.audit import EventType, Origin
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
    origin: Origin,
) -> User:
    """Registration from the API: counted per client address, then ``register``; a
    verification link goes to the new address in the same transaction."""
    await throttle.register_attempt(client_address)
    user = await register(db, hasher, data)
    audit.record(db, EventType.USER_REGISTERED, user_id=user.id, actor_id=user.id, origin=origin)
    await email_verification.send_link(db, settings, user)
    return user


async def login(
    db: AsyncSession,
    settings: Settings,
    hasher: PasswordHasher,
    codec: TokenCodec,
    throttle: Throttle,
    identifier: str,
    password: str,
    client_address: str,
    origin: Origin,
) -> auth_sessions.TokenPair:
    """Throttle, authenticate, start a session.

    The attempt is counted before the password is checked, so parallel guesses cannot slip
    through between a check and a count; once the address, the (identifier, address) pair
    or the account's ceiling is out of attempts even the right password gets 429. A success
    clears the pair's count. Unknown user, wrong password and inactive user fail alike, at
    the same cost. With REQUIRE_VERIFIED_EMAIL, the right password of an account whose
    address is unverified is a 403 (after the throttle's success: it was no guess).

    Every outcome is in the audit trail; a failure's event is its request's only write,
    kept although the request fails. A failure for an identifier of no account records no
    identifier. A sign-in from a new device is told to the account (NOTIFY_NEW_DEVICE).
    An account with a second factor gets 403 ``mfa_required`` and an ``mfa_token`` for
    `finish_sign_in` instead of a session.
    """
    user: User | None = None
    try:
        await throttle.login_attempt(identifier, client_address)
        user = await users_repo.get_by_login(db, identifier)
        account = account_key(user.id) if user is not None else unknown_account_key(identifier)
        await throttle.account_attempt(account, client_address)
    except TooManyRequests as throttled:
        metrics.record_login("throttled")
        if not await throttle.first_throttled_login(identifier, client_address):
            raise
        if user is None:
            user = await users_repo.get_by_login(db, identifier)
        _login_event(db, EventType.LOGIN_THROTTLED, user, origin)
        raise throttled.keeping_changes() from None
    check = await hasher.verify(password, user.password if user is not None else None)
    if user is None or not check.valid or not user.is_active:
        metrics.record_login("failed")
        reason = (
            "unknown_account" if user is None else "password" if not check.valid else "inactive"
        )
        _login_event(db, EventType.LOGIN_FAILED, user, origin, reason=reason)
        raise InvalidCredentials().keeping_changes()
    await throttle.login_accepted(identifier, account, client_address)
    if settings.require_verified_email and user.email_verified_at is None:
        metrics.record_login("failed")
        _login_event(db, EventType.LOGIN_FAILED, user, origin, reason="email_not_verified")
        raise EmailNotVerified().keeping_changes()
    if check.new_hash is not None:
        user.password = check.new_hash  # Django hash or old parameters: upgrade to argon2id
    if await mfa.required_for(db, user.id):
        # Kept: the challenge, and the upgraded hash (the password was right).
        raise MfaRequired(mfa.begin_sign_in(db, user.id)).keeping_changes()
    return await _signed_in(db, settings, codec, user, origin)


async def finish_sign_in(
    db: AsyncSession,
    settings: Settings,
    codec: TokenCodec,
    throttle: Throttle,
    keys: DataKeys,
    mfa_token: str,
    *,
    code: str | None,
    recovery_code: str | None,
    origin: Origin,
) -> auth_sessions.TokenPair:
    """The second step of a login with two-factor sign-in: the ``mfa_token`` of the right
    password and a code of the app or a recovery code.

    The token lives 5 minutes, works once and dies after 5 wrong codes (401
    ``invalid_mfa_token``); a wrong code is 400 ``invalid_code``, recorded (``mfa.failed``)
    and counted in the account's failed-attempt throttle, as current-password guesses are.
    """
    now = utcnow()
    challenge = await mfa_repo.live_challenge(db, mfa.hash_secret(mfa_token), now, mfa.MAX_FAILURES)
    user = await users_repo.get_by_id(db, challenge.user_id) if challenge is not None else None
    if challenge is None or user is None or not user.is_active:
        raise InvalidMfaToken()
    account = account_key(user.id)
    await throttle.password_attempt(account)
    method = await mfa.verify_second_factor(
        db, keys, user.id, code=code, recovery_code=recovery_code
    )
    if method is None:
        await mfa_repo.challenge_failed(db, challenge.id)
        mfa.failed(db, user.id, origin, "sign_in")
        raise InvalidCode().keeping_changes()
    if not await mfa_repo.use_challenge(db, challenge.id, now):
        raise InvalidMfaToken()  # a concurrent request with the same token won
    await throttle.password_accepted(account)
    if method == "recovery_code":
        mfa.recovery_code_used(db, user, origin, await mfa_repo.recovery_codes_left(db, user.id))
    return await _signed_in(db, settings, codec, user, origin, second_factor=method)


async def _signed_in(
    db: AsyncSession,
    settings: Settings,
    codec: TokenCodec,
    user: User,
    origin: Origin,
    *,
    second_factor: str | None = None,
) -> auth_sessions.TokenPair:
    """A login's success: ``last_login``, a new session (``amr`` "pwd otp" after a second
    factor), its event, and a notice for a new device."""
    user.last_login = utcnow()
    new_device = settings.notify_new_device and await notices.is_new_device(db, user, origin)
    amr = "pwd" if second_factor is None else "pwd otp"
    pair = await auth_sessions.start(db, codec, user, origin, amr=amr)
    details: dict[str, object] = {
        "session_id": str(pair.auth_session_id),
        "new_device": new_device,
    }
    if second_factor is not None:
        details["second_factor"] = second_factor
    audit.record(
        db,
        EventType.LOGIN_SUCCEEDED,
        user_id=user.id,
        actor_id=user.id,
        origin=origin,
        details=details,
    )
    if new_device:
        notices.new_sign_in(db, user, origin)
    metrics.record_login("succeeded")
    return pair


def _login_event(
    db: AsyncSession,
    event_type: EventType,
    user: User | None,
    origin: Origin,
    *,
    reason: str | None = None,
) -> None:
    """A refused login: the account when the identifier names one, never the identifier."""
    audit.record(
        db,
        event_type,
        user_id=user.id if user is not None else None,
        actor_id=None,
        origin=origin,
        details={"reason": reason} if reason is not None else None,
    )
