"""A few asyncpg connections beside the ORM's pool, for the two hottest statements.

Every authenticated read loads the user and checks the token's session
(`app.repositories.live_users`), and every refresh rotates its session's token
(`app.repositories.auth_sessions.SessionRotator`). Through the ORM session one statement
costs about ten times its round trip in Python (session, pool checkout, pre-ping, greenlet,
ORM loading, and for a write BEGIN and COMMIT); here each is one prepared statement on an
autocommit connection: one round trip, committed by itself. Nothing is cached: every
request sees the committed state of the user and of the session.

PostgreSQL only; on SQLite those statements go through the ORM.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from functools import partial

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import DatabaseSettings
from app.core.db import database_timeouts
from app.core.errors import ServiceUnavailable


class DriverConnections:
    """At most ``size`` asyncpg connections for single autocommit statements: idle ones on a
    stack, a new one opened when none is idle, a wait of at most ``wait_timeout`` when
    ``size`` are in use (then 503, like the ORM pool's DB_POOL_TIMEOUT).

    asyncpg's Pool does more than these reads need, at a cost on every request: each
    release runs in a new task (shielded) and each acquire builds a proxy object; on the
    profile request that was about a twentieth of the worker's time. A connection whose
    query failed or was cancelled is closed, never reused (its state is unknown); one the
    server closed while idle is dropped when next taken; one idle for ``max_idle`` seconds
    (as asyncpg's Pool, 300) is closed by the next request, so a burst's connections do not
    stay open for good. The most recently used connection is taken first: the others age.
    """

    def __init__(
        self,
        connect: Callable[[], Awaitable[asyncpg.Connection]],
        size: int,
        wait_timeout: float,
        max_idle: float = 300.0,
    ) -> None:
        self._connect = connect
        self._idle: list[tuple[asyncpg.Connection, float]] = []  # oldest first
        self._slots = asyncio.Semaphore(size)
        self._wait_timeout = wait_timeout
        self._max_idle = max_idle
        self._closed = False

    async def fetchrow(self, query: str, *args: object) -> asyncpg.Record | None:
        if self._closed:
            raise ServiceUnavailable("The database is unavailable")
        if self._slots.locked():
            try:
                async with asyncio.timeout(self._wait_timeout):
                    await self._slots.acquire()
            except TimeoutError:
                raise ServiceUnavailable("The database is unavailable") from None
        else:
            await self._slots.acquire()  # a free slot: returns at once
        try:
            if self._closed:  # closed while this request waited for a slot
                raise ServiceUnavailable("The database is unavailable")
            connection = await self._take()
            try:
                row: asyncpg.Record | None = await connection.fetchrow(query, *args)
            except BaseException:
                connection.terminate()
                raise
            if self._closed:
                await connection.close()
            else:
                now = time.monotonic()
                self._idle.append((connection, now))
                while now - self._idle[0][1] > self._max_idle:
                    self._idle.pop(0)[0].terminate()
            return row
        finally:
            self._slots.release()

    async def _take(self) -> asyncpg.Connection:
        while self._idle:
            connection, _ = self._idle.pop()
            if not connection.is_closed():
                return connection
        return await self._connect()

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for connection, _ in idle:
            connection.terminate()


def open_driver_connections(engine: AsyncEngine, settings: DatabaseSettings) -> DriverConnections:
    """Connections with the engine's connection arguments (host, user, ssl, ...) and the
    same bounded timeouts, opened on first use, so the service starts while the database is
    down, as with the ORM's pool."""
    cargs, cparams = engine.dialect.create_connect_args(engine.url)
    cparams.update(database_timeouts(settings))
    for sqlalchemy_only in (
        "prepared_statement_cache_size",
        "prepared_statement_name_func",
        "async_creator_fn",
    ):
        cparams.pop(sqlalchemy_only, None)
    connect = partial(asyncpg.connect, *cargs, **cparams)
    return DriverConnections(connect, settings.db_pool_size, settings.db_pool_timeout)
