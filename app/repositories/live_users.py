"""The authenticated-request query straight on the PostgreSQL driver (asyncpg).

Every authenticated read (the profile, staff reads) loads the user and checks that the
token's session is live. Through the ORM session that one round trip costs about ten times
the round trip itself in Python (session, pool checkout, greenlet, ORM loading); here it is
one prepared statement on a connection of a small asyncpg pool. The SQL is the same as
`auth_sessions.get_user_with_session_state`: nothing is cached, every request sees the
committed state of the user and of the session.

PostgreSQL only; on SQLite the ORM path is used.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import DatabaseSettings
from app.core.db import database_timeouts
from app.models.user import SNAPSHOT_FIELDS, UserSnapshot

# The snapshot's fields in its order (UserSnapshot(*row)); never the password hash.
_COLUMNS = ", ".join(f"users.{name}" for name in SNAPSHOT_FIELDS)
_USER_WITH_SESSION_STATE = f"""
SELECT {_COLUMNS},
       EXISTS (
           SELECT 1 FROM auth_sessions
           WHERE auth_sessions.id = $2
             AND auth_sessions.user_id = users.id
             AND auth_sessions.revoked_at IS NULL
       ) AS session_live
FROM users WHERE users.id = $1
"""  # noqa: S608 (column names from the model, values bound)
_USER_BY_ID = f"SELECT {_COLUMNS} FROM users WHERE users.id = $1"  # noqa: S608


async def _keep(_connection: Any) -> None:
    """Pool reset hook: nothing to reset (only autocommit SELECTs run on these connections),
    which saves asyncpg's default RESET ALL round trip on every release."""


class LiveUserReader:
    def __init__(self, pool: Any) -> None:
        self._pool = pool

    @classmethod
    async def create(cls, engine: AsyncEngine, settings: DatabaseSettings) -> LiveUserReader:
        """A pool with the engine's connection arguments (host, user, ssl, ...) and the same
        bounded timeouts; it connects on first use, so the service starts while the
        database is down, as before."""
        cargs, cparams = engine.dialect.create_connect_args(engine.url)
        cparams.update(database_timeouts(settings))
        for sqlalchemy_only in (
            "prepared_statement_cache_size",
            "prepared_statement_name_func",
            "async_creator_fn",
        ):
            cparams.pop(sqlalchemy_only, None)
        pool = await asyncpg.create_pool(
            *cargs, min_size=0, max_size=settings.db_pool_size, reset=_keep, **cparams
        )
        return cls(pool)

    async def close(self) -> None:
        await self._pool.close()

    async def user_with_session_state(
        self, user_id: int, session_id: uuid.UUID
    ) -> tuple[UserSnapshot | None, bool]:
        row = await self._pool.fetchrow(_USER_WITH_SESSION_STATE, user_id, session_id)
        if row is None:
            return None, False
        return UserSnapshot(*row[:-1]), bool(row[-1])

    async def user(self, user_id: int) -> UserSnapshot | None:
        row = await self._pool.fetchrow(_USER_BY_ID, user_id)
        return None if row is None else UserSnapshot(*row)
