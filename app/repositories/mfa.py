"""All SQL for two-factor sign-in: TOTP credentials, recovery codes, sign-in challenges."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession

from app.models.mfa import MfaChallenge, RecoveryCode, TotpCredential


async def totp(
    db: AsyncSession, user_id: int, *, for_update: bool = False
) -> TotpCredential | None:
    query = select(TotpCredential).where(TotpCredential.user_id == user_id)
    if for_update:
        query = query.with_for_update()
    return await db.scalar(query)


async def totp_enabled(db: AsyncSession, user_id: int) -> bool:
    found = await db.scalar(
        select(TotpCredential.user_id).where(
            TotpCredential.user_id == user_id, TotpCredential.confirmed_at.is_not(None)
        )
    )
    return found is not None


def add_totp(db: AsyncSession, user_id: int, sealed_secret: str, now: datetime) -> TotpCredential:
    credential = TotpCredential(user_id=user_id, secret=sealed_secret, created_at=now)
    db.add(credential)
    return credential


async def advance_step(db: AsyncSession, user_id: int, step: int) -> bool:
    """Record ``step`` as used, only if it is later than the last one: of two requests with
    the same code, one wins (the row lock on PostgreSQL, the single writer on SQLite)."""
    result = await db.execute(
        update(TotpCredential)
        .where(
            TotpCredential.user_id == user_id,
            or_(TotpCredential.last_step.is_(None), TotpCredential.last_step < step),
        )
        .values(last_step=step)
        .execution_options(synchronize_session=False)
    )
    assert isinstance(result, CursorResult)
    return result.rowcount == 1


async def delete_all(db: AsyncSession, user_id: int) -> bool:
    """Remove the second factor (credential, codes, pending sign-ins); whether it was on."""
    result = await db.execute(
        delete(TotpCredential)
        .where(TotpCredential.user_id == user_id)
        .returning(TotpCredential.confirmed_at)
        .execution_options(synchronize_session=False)
    )
    confirmed = result.scalar_one_or_none()
    await db.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user_id))
    await db.execute(delete(MfaChallenge).where(MfaChallenge.user_id == user_id))
    return confirmed is not None


async def replace_recovery_codes(db: AsyncSession, user_id: int, hashes: Sequence[str]) -> None:
    await db.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user_id))
    db.add_all(RecoveryCode(user_id=user_id, code_hash=code_hash) for code_hash in hashes)


async def use_recovery_code(db: AsyncSession, user_id: int, code_hash: str, now: datetime) -> bool:
    """Spend an unused code of the user; whether there was one (once, under concurrency)."""
    result = await db.execute(
        update(RecoveryCode)
        .where(
            RecoveryCode.user_id == user_id,
            RecoveryCode.code_hash == code_hash,
            RecoveryCode.used_at.is_(None),
        )
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    assert isinstance(result, CursorResult)
    return result.rowcount >= 1


async def recovery_codes_left(db: AsyncSession, user_id: int) -> int:
    count = await db.scalar(
        select(func.count())
        .select_from(RecoveryCode)
        .where(RecoveryCode.user_id == user_id, RecoveryCode.used_at.is_(None))
    )
    return int(count or 0)


def add_challenge(
    db: AsyncSession, user_id: int, token_hash: str, now: datetime, expires_at: datetime
) -> MfaChallenge:
    challenge = MfaChallenge(
        id=uuid.uuid4(),
        user_id=user_id,
        token_hash=token_hash,
        created_at=now,
        expires_at=expires_at,
        failures=0,
    )
    db.add(challenge)
    return challenge


async def live_challenge(
    db: AsyncSession, token_hash: str, now: datetime, max_failures: int
) -> MfaChallenge | None:
    return await db.scalar(
        select(MfaChallenge).where(
            MfaChallenge.token_hash == token_hash,
            MfaChallenge.used_at.is_(None),
            MfaChallenge.expires_at > now,
            MfaChallenge.failures < max_failures,
        )
    )


async def challenge_failed(db: AsyncSession, challenge_id: uuid.UUID) -> None:
    await db.execute(
        update(MfaChallenge)
        .where(MfaChallenge.id == challenge_id)
        .values(failures=MfaChallenge.failures + 1)
        .execution_options(synchronize_session=False)
    )


async def use_challenge(db: AsyncSession, challenge_id: uuid.UUID, now: datetime) -> bool:
    """Spend the challenge; whether this request did (a concurrent one may have)."""
    result = await db.execute(
        update(MfaChallenge)
        .where(MfaChallenge.id == challenge_id, MfaChallenge.used_at.is_(None))
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    assert isinstance(result, CursorResult)
    return result.rowcount == 1


async def delete_stale_challenges(db: AsyncSession, before: datetime) -> None:
    await db.execute(delete(MfaChallenge).where(MfaChallenge.expires_at < before))
