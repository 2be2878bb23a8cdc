"""Which database errors mean "the database is unavailable" (a 503), not a bug (a 500).

Apart from the domain errors (`app.core.errors` imports no driver) and from the HTTP
handlers (`app.core.http_errors`), because both sides need it: the readiness check and the
HTTP handlers turn these into `ServiceUnavailable`.
"""

from __future__ import annotations

from collections.abc import Iterator

import asyncpg
from sqlalchemy import exc as sa_exc

# asyncpg errors that mean "the database cannot be reached or is going away", not "this
# statement is wrong": connection failures and closed connections, server shutdown or
# cancelled statements (statement_timeout), too many connections.
_ASYNCPG_UNAVAILABLE: tuple[type[Exception], ...] = (
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
)
_DATABASE_MODULES = ("sqlalchemy.", "asyncpg.", "aiosqlite.")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _raised_by_database_layer(exc: BaseException) -> bool:
    traceback = exc.__traceback__
    while traceback is not None:
        module = traceback.tb_frame.f_globals.get("__name__", "")
        if isinstance(module, str) and module.startswith(_DATABASE_MODULES):
            return True
        traceback = traceback.tb_next
    return False


def is_database_unavailable(exc: BaseException) -> bool:
    """True when ``exc`` means the database is unreachable (down, cut off, timing out, out
    of connections), as opposed to a bug or a refused statement."""
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated or isinstance(
            exc, sa_exc.OperationalError | sa_exc.InterfaceError
        ):
            return True
        return any(isinstance(item, _ASYNCPG_UNAVAILABLE) for item in _chain(exc))
    if isinstance(exc, sa_exc.TimeoutError):  # no pooled connection within DB_POOL_TIMEOUT
        return True
    if isinstance(exc, _ASYNCPG_UNAVAILABLE):
        return True
    # OSError covers ConnectionError and TimeoutError (asyncpg's connect and command
    # timeouts): a database outage only when raised from the database drivers.
    return isinstance(exc, OSError) and _raised_by_database_layer(exc)


# PostgreSQL chose this transaction as the victim of a deadlock, or could not serialise
# it: nothing was written, and the same request can succeed when sent again.
_ASYNCPG_CONFLICT: tuple[type[Exception], ...] = (
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.SerializationError,
)


def is_transient_conflict(exc: BaseException) -> bool:
    """True when PostgreSQL refused ``exc``'s transaction because of concurrent ones (a
    deadlock victim, a serialisation failure): a retry, not a bug in the request."""
    return any(isinstance(item, _ASYNCPG_CONFLICT) for item in _chain(exc))


# The exception types a database outage can surface as, for the handlers to catch; each
# one is classified by `is_database_unavailable`.
DATABASE_ERROR_TYPES: tuple[type[Exception], ...] = (
    sa_exc.SQLAlchemyError,
    OSError,
    *_ASYNCPG_UNAVAILABLE,
)
