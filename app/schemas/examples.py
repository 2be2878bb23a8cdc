"""The request examples /docs shows (and "Try it out" sends): each one works as it is.

One story, in order: register alice, log in, edit the profile, change the password, ask for
a reset or a new verification link, delete the account. `tests/test_openapi_examples.py`
sends every example of the schema to a fresh service (after the register and login
examples) and expects the operation's documented success. Without an example here, Swagger
UI makes one up from the schema: ``"string"`` for text and ``"********"`` for a password,
which the password rules refuse as too common.

Operations whose body holds a token from another answer or an email (refresh, logout,
the reset confirmation, email verification) or a code of an authenticator app (two-factor
sign-in, its confirmation and management) have none: no fixed value could work.
"""

from __future__ import annotations

from typing import Any

from fastapi.openapi.models import Example

USERNAME = "alice"
EMAIL = "alice@example.com"
PASSWORD = "Tulip-harbor-quartz-47"  # noqa: S105 (an example; passes the password rules)
NEW_PASSWORD = "Orchid-meadow-cobalt-58"  # noqa: S105


def _one(summary: str, value: dict[str, Any]) -> dict[str, Example]:
    return {"example": Example(summary=summary, value=value)}


REGISTER = _one(
    "alice signs up",
    {
        "username": USERNAME,
        "email": EMAIL,
        "password": PASSWORD,
        "first_name": "Alice",
        "last_name": "Liddell",
        "number_phone": "5551234567",
    },
)
LOGIN = _one("alice logs in (username or email)", {"username": USERNAME, "password": PASSWORD})
PROFILE_UPDATE = _one(
    "Change names and phone (no current password needed)",
    {"first_name": "Alice", "last_name": "Pleasance", "number_phone": "5550000000"},
)
PASSWORD_CHANGE = _one(
    "Change the password (every session ends)",
    {"current_password": PASSWORD, "new_password": NEW_PASSWORD},
)
ACCOUNT_DELETE = _one("Delete the account", {"current_password": PASSWORD})
EMAIL_ONLY = _one("The account's address", {"email": EMAIL})
TOTP_ENROL = _one("Start turning on two-factor sign-in", {"current_password": PASSWORD})
ADMIN_USER_UPDATE = _one(
    "Make a user staff and mark their address verified",
    {"is_staff": True, "email_verified": True},
)
