"""The signed-in user's read straight on the PostgreSQL driver (`app.repositories.driver`).

Every authenticated read (the profile, staff reads) loads the user and checks that the
token's session is live, in one prepared statement. The SQL is the same as
`auth_sessions.get_user_with_auth_session_state`: nothing is cached, every request sees
the committed state of the user and of the session.
"""

from __future__ import annotations

import uuid

from app.models.user import SNAPSHOT_FIELDS, UserSnapshot
from app.repositories.driver import DriverConnections

# The snapshot's fields in its order (UserSnapshot(*row)); never the password hash.
_COLUMNS = ", ".join(f"users.{name}" for name in SNAPSHOT_FIELDS)
_USER_WITH_AUTH_SESSION_STATE = f"""
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


class LiveUserReader:
    def __init__(self, connections: DriverConnections) -> None:
        self._connections = connections

    async def user_with_auth_session_state(
        self, user_id: int, auth_session_id: uuid.UUID
    ) -> tuple[UserSnapshot | None, bool]:
        row = await self._connections.fetchrow(
            _USER_WITH_AUTH_SESSION_STATE, user_id, auth_session_id
        )
        if row is None:
            return None, False
        return UserSnapshot(*row[:-1]), bool(row[-1])

    async def user(self, user_id: int) -> UserSnapshot | None:
        row = await self._connections.fetchrow(_USER_BY_ID, user_id)
        return None if row is None else UserSnapshot(*row)
