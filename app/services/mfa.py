"""Two-factor sign-in with an authenticator app (TOTP) and recovery codes.

Enrolment is two steps: a secret is drawn (pending: sign-in is unchanged), then a code of
the app confirms it and ten recovery codes are shown once. The secret is sealed at rest
(`app.core.encryption`, DATA_ENCRYPTION_KEY); the recovery codes are kept as SHA-256
hashes (60 random bits each). A code is never taken twice: the last accepted time step is
stored and only a later one passes; a recovery code is spent by the UPDATE that uses it.
Sign-in's second step is in `app.services.auth.finish_sign_in`.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.core import totp
from app.core.encryption import DataCipher, DataKeys
from app.core.errors import (
    InvalidCode,
    MfaAlreadyEnabled,
    MfaNotEnabled,
    MfaNotPending,
    MfaUnavailable,
)
from app.core.security import PasswordHasher
from app.mail.messages import MailKind
from app.models.base import utcnow
from app.models.mfa import TotpCredential
from app.models.user import User
from app.repositories import mfa as mfa_repo
from app.services import audit, mail
from app.services.account import verify_current_password
from app.services.audit import EventType, Origin
from app.services.throttle import Throttle

MFA_TOKEN_TTL = timedelta(minutes=5)
MAX_FAILURES = 5
RECOVERY_CODES = 10
RECOVERY_CODE_BYTES = 8  # 12 base32 characters: 60 bits
_TOTP_CODE = re.compile(r"[0-9]{6}")


@dataclass(frozen=True, slots=True)
class Enrolment:
    secret: str  # base32, for typing into the app
    otpauth_uri: str  # for a QR code


@dataclass(frozen=True, slots=True)
class MfaState:
    totp: bool
    recovery_codes_left: int


def _cipher(keys: DataKeys) -> DataCipher:
    cipher = keys.cipher()
    if cipher is None:
        raise MfaUnavailable()
    return cipher


def _context(user_id: int) -> str:
    return f"mfa_totp:{user_id}"


def hash_secret(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def normalise_recovery_code(code: str) -> str:
    """Case, spaces and dashes do not matter: ``ABCD-efgh-2345`` is ``abcdefgh2345``."""
    return re.sub(r"[\s-]", "", code).lower()


def new_recovery_codes() -> list[str]:
    codes = []
    for _ in range(RECOVERY_CODES):
        raw = base64.b32encode(secrets.token_bytes(RECOVERY_CODE_BYTES)).decode().lower()[:12]
        codes.append(f"{raw[:4]}-{raw[4:8]}-{raw[8:12]}")
    return codes


async def enrol(
    db: AsyncSession,
    keys: DataKeys,
    hasher: PasswordHasher,
    throttle: Throttle,
    user: User,
    current_password: str,
    service_name: str,
) -> Enrolment:
    """A new pending secret (replacing a pending one); 409 when TOTP is already on."""
    cipher = _cipher(keys)
    await verify_current_password(hasher, throttle, user, current_password)
    credential = await mfa_repo.totp(db, user.id, for_update=True)
    if credential is not None and credential.confirmed_at is not None:
        raise MfaAlreadyEnabled()
    secret = totp.new_secret()
    sealed = cipher.seal(secret, _context(user.id))
    if credential is None:
        mfa_repo.add_totp(db, user.id, sealed, utcnow())
    else:
        credential.secret = sealed
        credential.created_at = utcnow()
        credential.last_step = None
    return Enrolment(
        secret=totp.base32(secret),
        otpauth_uri=totp.otpauth_uri(secret, service_name, user.username),
    )


async def confirm(
    db: AsyncSession, keys: DataKeys, user: User, code: str, origin: Origin
) -> list[str]:
    """Turn TOTP on with a code of the pending secret; the new recovery codes (shown once)."""
    cipher = _cipher(keys)
    credential = await mfa_repo.totp(db, user.id, for_update=True)
    if credential is None or credential.confirmed_at is not None:
        raise MfaNotPending()
    step = _matching_step(cipher, credential, code)
    if step is None:
        raise InvalidCode()
    credential.confirmed_at = utcnow()
    credential.last_step = step
    codes = await _replace_recovery_codes(db, user.id)
    audit.record(db, EventType.MFA_ENABLED, user_id=user.id, actor_id=user.id, origin=origin)
    _notice(db, user, "Two-factor sign-in was turned on for your account.")
    return codes


async def state(db: AsyncSession, user_id: int) -> MfaState:
    return MfaState(
        totp=await mfa_repo.totp_enabled(db, user_id),
        recovery_codes_left=await mfa_repo.recovery_codes_left(db, user_id),
    )


async def regenerate_recovery_codes(
    db: AsyncSession,
    keys: DataKeys,
    hasher: PasswordHasher,
    throttle: Throttle,
    user: User,
    current_password: str,
    code: str,
    origin: Origin,
) -> list[str]:
    """A new set (the old one stops working), with the password and a code."""
    await _check_password_and_code(
        db, keys, hasher, throttle, user, current_password, code, "recovery_codes", origin
    )
    return await _replace_recovery_codes(db, user.id)


async def disable(
    db: AsyncSession,
    keys: DataKeys,
    hasher: PasswordHasher,
    throttle: Throttle,
    user: User,
    current_password: str,
    code: str,
    origin: Origin,
) -> None:
    await _check_password_and_code(
        db, keys, hasher, throttle, user, current_password, code, "disable", origin
    )
    await mfa_repo.delete_all(db, user.id)
    audit.record(db, EventType.MFA_DISABLED, user_id=user.id, actor_id=user.id, origin=origin)
    _notice(db, user, "Two-factor sign-in was turned off for your account.")


async def reset_by_admin(db: AsyncSession, user: User, actor: User, origin: Origin) -> None:
    """A superuser removes a user's second factor (a lost phone and lost codes)."""
    if not await mfa_repo.delete_all(db, user.id):
        return
    audit.record(
        db, EventType.MFA_RESET_BY_ADMIN, user_id=user.id, actor_id=actor.id, origin=origin
    )
    _notice(db, user, "An administrator turned two-factor sign-in off for your account.")


# --- sign-in --------------------------------------------------------------------------


async def required_for(db: AsyncSession, user_id: int) -> bool:
    return await mfa_repo.totp_enabled(db, user_id)


def begin_sign_in(db: AsyncSession, user_id: int, now: datetime | None = None) -> str:
    """The ``mfa_token`` a right password gets when the account has a second factor."""
    now = now or utcnow()
    token = secrets.token_urlsafe(32)
    mfa_repo.add_challenge(db, user_id, hash_secret(token), now, now + MFA_TOKEN_TTL)
    return token


async def verify_second_factor(
    db: AsyncSession,
    keys: DataKeys,
    user_id: int,
    *,
    code: str | None,
    recovery_code: str | None,
) -> str | None:
    """``"otp"`` or ``"recovery_code"`` for the factor that passed (and is now spent), or
    None."""
    if code is not None:
        credential = await mfa_repo.totp(db, user_id)
        if credential is None or credential.confirmed_at is None:
            return None
        step = _matching_step(_cipher(keys), credential, code, after=credential.last_step)
        if step is not None and await mfa_repo.advance_step(db, user_id, step):
            return "otp"
        return None
    if recovery_code is not None:
        code_hash = hash_secret(normalise_recovery_code(recovery_code))
        if await mfa_repo.use_recovery_code(db, user_id, code_hash, utcnow()):
            return "recovery_code"
    return None


def recovery_code_used(db: AsyncSession, user: User, origin: Origin, codes_left: int) -> None:
    audit.record(
        db,
        EventType.MFA_RECOVERY_CODE_USED,
        user_id=user.id,
        actor_id=user.id,
        origin=origin,
        details={"codes_left": codes_left},
    )
    _notice(
        db,
        user,
        f"A recovery code was used to sign in to your account; {codes_left} are left.",
    )


# --- helpers --------------------------------------------------------------------------


def _matching_step(
    cipher: DataCipher, credential: TotpCredential, code: str, after: int | None = None
) -> int | None:
    code = "".join(code.split())
    if not _TOTP_CODE.fullmatch(code):
        return None
    secret = cipher.open(credential.secret, _context(credential.user_id))
    return totp.matching_step(secret, code, time.time(), after=after)


async def _replace_recovery_codes(db: AsyncSession, user_id: int) -> list[str]:
    codes = new_recovery_codes()
    hashes = [hash_secret(normalise_recovery_code(code)) for code in codes]
    await mfa_repo.replace_recovery_codes(db, user_id, hashes)
    return codes


async def _check_password_and_code(
    db: AsyncSession,
    keys: DataKeys,
    hasher: PasswordHasher,
    throttle: Throttle,
    user: User,
    current_password: str,
    code: str,
    during: str,
    origin: Origin,
) -> None:
    """The password, then a code of the app or a recovery code (either works). A wrong code
    is recorded (``mfa.failed``, kept although the request fails)."""
    await verify_current_password(hasher, throttle, user, current_password)
    if not await mfa_repo.totp_enabled(db, user.id):
        raise MfaNotEnabled()
    is_totp = _TOTP_CODE.fullmatch("".join(code.split())) is not None
    method = await verify_second_factor(
        db,
        keys,
        user.id,
        code=code if is_totp else None,
        recovery_code=None if is_totp else code,
    )
    if method is None:
        failed(db, user.id, origin, during, actor_id=user.id)
        raise InvalidCode().keeping_changes()


def failed(
    db: AsyncSession, user_id: int, origin: Origin, during: str, actor_id: int | None = None
) -> None:
    """A wrong second factor: ``during`` is "sign_in", "disable" or "recovery_codes";
    ``actor_id`` the signed-in user (none at sign-in: who typed it is unknown)."""
    audit.record(
        db,
        EventType.MFA_FAILED,
        user_id=user_id,
        actor_id=actor_id,
        origin=origin,
        details={"during": during},
    )


def _notice(db: AsyncSession, user: User, change: str) -> None:
    mail.enqueue(
        db,
        kind=MailKind.MFA_CHANGED,
        to=user.email,
        context={"username": user.username, "change": change},
    )
