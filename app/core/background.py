"""Work a request starts and does not wait for, detached from the request's cycle.

Starlette's `BackgroundTasks` run after the response is sent but inside the request's
ASGI call, and uvicorn handles the next request of a keep-alive connection only once that
call returns: the next answer's time would tell how long the work took. Work whose length
must not be observable (a password-reset lookup: does the address have an account?) is
spawned here instead. The lifespan waits for what is still running at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import ParamSpec

logger = logging.getLogger("app.background")

P = ParamSpec("P")


class BackgroundWork:
    def __init__(self, limit: int = 256, shutdown_grace: float = 10.0) -> None:
        self._shutdown_grace = shutdown_grace
        self._tasks: set[asyncio.Task[None]] = set()
        # Past the limit the caller waits for a slot: back-pressure instead of an
        # unbounded heap of pending tasks under a flood (the throttles come first).
        self._slots = asyncio.Semaphore(limit)

    async def spawn(
        self, work: Callable[P, Awaitable[None]], *args: P.args, **kwargs: P.kwargs
    ) -> None:
        await self._slots.acquire()

        async def run() -> None:
            try:
                await work(*args, **kwargs)
            except Exception as exc:
                logger.error("background work failed: %s", type(exc).__name__)
            finally:
                self._slots.release()

        task = asyncio.create_task(run())
        self._tasks.add(task)  # a strong reference until it ends
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait until the work running now (and what it spawns) has ended."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def aclose(self) -> None:
        """At shutdown: give running work ``shutdown_grace`` seconds, then cancel it."""
        try:
            await asyncio.wait_for(self.drain(), self._shutdown_grace)
        except TimeoutError:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
