"""The replaced service's tokens in the audit trail: ``legacy_token.used``, once per token.

A read with such a token writes nothing of its own, so the first use of each token is
remembered in the throttle's store (memory, or Redis shared by the workers) until the
token expires, and its event is written in a transaction of its own. The record is best
effort: a store or database hiccup is logged, and the request goes on.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from datetime import UTC, datetime

from limits.aio.storage import MovingWindowSupport, Storage
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.security import LegacyTokenClaims
from app.services import audit
from app.services.audit import EventType, Origin

logger = logging.getLogger("app.legacy_tokens")

KEY_PREFIX = "legacy-token-used"


async def note_use(
    storage: Storage,
    sessionmaker: async_sessionmaker[AsyncSession],
    user_id: int,
    claims: LegacyTokenClaims,
    origin: Origin,
) -> None:
    """Record the first use of the legacy token ``claims`` describe."""
    try:
        if not await _first_use(storage, claims):
            return
        async with sessionmaker() as db, db.begin():
            audit.record(
                db,
                EventType.LEGACY_TOKEN_USED,
                user_id=user_id,
                actor_id=user_id,
                origin=origin,
                details={
                    "token_issued_at": datetime.fromtimestamp(claims.issued_at, UTC).isoformat()
                },
            )
    except Exception as exc:
        logger.warning("legacy token use not recorded: %s", type(exc).__name__)


async def _first_use(storage: Storage, claims: LegacyTokenClaims) -> bool:
    # The token's id is the Django service's: hashed, so the store holds nothing usable.
    key = f"{KEY_PREFIX}/{hashlib.sha256(claims.jti.encode()).hexdigest()}"
    remaining = max(1, math.ceil(claims.expires_at - time.time()))
    assert isinstance(storage, MovingWindowSupport)
    return await storage.acquire_entry(key, 1, remaining)
