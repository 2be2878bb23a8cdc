"""Engine, session factories and the per-request unit of work (`committing_db`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.util.concurrency import await_

from app.core.config import DatabaseSettings
from app.core.db_errors import is_database_unavailable
from app.core.errors import AppError, ServiceUnavailable

SQLITE_BUSY_TIMEOUT_MS = 30_000
_AFTER_COMMIT = "after_commit"
_AFTER_ROLLBACK = "after_rollback"

logger = logging.getLogger("app.db")

Callback = Callable[[], Awaitable[None]]


def create_engine(settings: DatabaseSettings) -> AsyncEngine:
    # hide_parameters on both backends: SQLAlchemy's error messages (and its statement log)
    # never carry the values (password hashes, tokens). The drivers' own messages can still
    # quote a row; app.core.logging leaves them out of the log.
    if settings.is_sqlite:
        engine = create_async_engine(
            settings.database_url,
            hide_parameters=True,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        )
        event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
        return engine
    # Every wait on PostgreSQL is bounded, so an outage is a 503 within seconds, not a
    # hang: opening a connection, each statement (asyncpg's command_timeout, and the
    # server's statement_timeout), waiting for a pooled connection. pool_pre_ping replaces
    # connections that died while the database was away, so the service recovers by itself.
    engine = create_async_engine(
        settings.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout,
        pool_pre_ping=True,
        hide_parameters=True,
        connect_args=database_timeouts(settings),
    )
    if engine.dialect.driver == "asyncpg":
        # An instance attribute: the dialect calls self.do_ping at every checkout.
        setattr(engine.dialect, "do_ping", _ping_in_one_round_trip)  # noqa: B010
    return engine


def _ping_in_one_round_trip(dbapi_connection: Any) -> bool:
    """The pre-ping of every pooled checkout (every write request), in one round trip.

    SQLAlchemy's asyncpg ping is three: BEGIN, ``;`` as a prepared statement, ROLLBACK
    (the transaction keeps pgbouncer's transaction mode from splitting the prepare and
    the execute over two server connections). asyncpg's ``execute`` without arguments
    uses the simple query protocol, one message that prepares nothing, so ``SELECT 1``
    this way is as safe under pgbouncer without the transaction (not ``;``: asyncpg's
    simple query fails on the empty query's answer). Failures go through the adapter's
    own error translation, so the pool still sees a disconnect and replaces the
    connection (tests/test_db.py kills a pooled connection's backend).
    """
    try:
        await_(dbapi_connection._connection.execute("SELECT 1"))
    except Exception as error:
        dbapi_connection._handle_exception(error)
    return True


async def check_database(engine: AsyncEngine, seconds: float) -> None:
    """``SELECT 1`` within ``seconds``, else `ServiceUnavailable` (readiness)."""
    try:
        async with asyncio.timeout(seconds), engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except Exception as exc:
        if isinstance(exc, TimeoutError) or is_database_unavailable(exc):
            raise ServiceUnavailable("The database is unreachable") from None
        raise


def database_timeouts(settings: DatabaseSettings) -> dict[str, Any]:
    """asyncpg connection arguments that bound every wait on PostgreSQL: connecting, and
    each statement (client side, and server side through statement_timeout)."""
    return {
        "timeout": settings.db_connect_timeout,
        "command_timeout": settings.db_command_timeout,
        "server_settings": {"statement_timeout": str(int(settings.db_command_timeout * 1000))},
    }


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    """WAL lets readers run beside a writer; the busy timeout makes writers queue, not fail."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


def create_read_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions for requests that only read: autocommit connections from the same pool, so
    a read is one round trip (no BEGIN, no COMMIT). Each statement sees the latest committed
    data, as under READ COMMITTED; nothing written through them would be atomic."""
    return async_sessionmaker(
        engine.execution_options(isolation_level="AUTOCOMMIT"),
        expire_on_commit=False,
        autoflush=False,
    )


def after_commit(db: AsyncSession, callback: Callback) -> None:
    """Run ``callback`` once the request's transaction is committed (e.g. delete a replaced
    file: only when the database no longer points to it)."""
    db.info.setdefault(_AFTER_COMMIT, []).append(callback)


def after_rollback(db: AsyncSession, callback: Callback) -> None:
    """Run ``callback`` if the request's transaction is rolled back or its commit fails
    (e.g. delete a file written for a change that was not kept)."""
    db.info.setdefault(_AFTER_ROLLBACK, []).append(callback)


async def _run_callbacks(db: AsyncSession, *, committed: bool) -> None:
    callbacks: list[Callback] = db.info.pop(_AFTER_COMMIT if committed else _AFTER_ROLLBACK, [])
    db.info.pop(_AFTER_ROLLBACK if committed else _AFTER_COMMIT, None)
    for callback in callbacks:
        try:
            await callback()
        except Exception:
            # The transaction's outcome is decided; a failed clean-up is logged, not raised.
            logger.exception("%s callback failed", "after-commit" if committed else "rollback")


@asynccontextmanager
async def committing_db(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """One session per request; the only place that commits.

    `app.dependencies.get_db` enters it, with ``Depends(get_db,
    scope="function")`` so the commit runs after the handler returns and before the
    response is sent: a failed commit is an error response, never a 200 for data that was
    not written. Callbacks registered with `after_commit` / `after_rollback` run once the
    outcome is known.
    """
    async with sessionmaker() as db:
        try:
            yield db
        except BaseException as exc:
            if isinstance(exc, AppError) and exc.keeps_changes:
                await _commit(db)
            else:
                await db.rollback()
                await _run_callbacks(db, committed=False)
            raise
        await _commit(db)


async def _commit(db: AsyncSession) -> None:
    try:
        await db.commit()
    except BaseException:
        await _run_callbacks(db, committed=False)
        raise
    await _run_callbacks(db, committed=True)
