"""Periodic clean-up in each worker: the audit trail's retention.

Every worker runs it; replicas purging at once only delete the same rows (each batch is
its own short transaction), so no coordination is needed.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.services import audit

logger = logging.getLogger("app.housekeeping")

INTERVAL_SECONDS = 3600.0
FIRST_RUN_SECONDS = 60.0  # not during start-up, when replicas are busy migrating and warming


class Housekeeper:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        retention: timedelta,
        *,
        interval: float = INTERVAL_SECONDS,
        first_run: float = FIRST_RUN_SECONDS,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._retention = retention
        self._interval = interval
        self._first_run = first_run
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="housekeeping")

    async def run_once(self) -> int:
        deleted = await audit.purge(self._sessionmaker, self._retention)
        if deleted:
            logger.info("purged %d audit events", deleted, extra={"purged": deleted})
        return deleted

    async def _run(self) -> None:
        await asyncio.sleep(self._first_run)
        while True:
            try:
                await self.run_once()
            except Exception as exc:  # the database may be away: try again next time
                logger.warning("audit purge failed: %s", type(exc).__name__)
            await asyncio.sleep(self._interval)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
