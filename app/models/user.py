from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Literal

from sqlalchemy import BigInteger, Index, Integer, String, false, text, true
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime, utcnow

# Column sizes of Django's AbstractUser and of the model we replace; the schemas mirror them.
USERNAME_MAX = 150
PASSWORD_HASH_MAX = 128
EMAIL_MAX = 200
NAME_MAX = 200
PHONE_MAX = 10
AVATAR_MAX = 255
ID_MAX = 2**63 - 1  # BIGINT; larger ids are refused before they reach the database

# The orders of the staff user list: a column, ``-`` for descending.
Ordering = Literal[
    "id",
    "-id",
    "username",
    "-username",
    "email",
    "-email",
    "date_joined",
    "-date_joined",
    "last_login",
    "-last_login",
]


class User(Base):
    __tablename__ = "users"
    # SQLite: AUTOINCREMENT so a deleted user's id is never handed to a new user (a token
    # verified elsewhere must not come to mean somebody else). PostgreSQL sequences never reuse.
    # The staff list ordered by date_joined reads this index in order (migration 0004).
    __table_args__ = (
        Index(None, "date_joined", "id"),
        {"sqlite_autoincrement": True},
    )

    # BIGINT on PostgreSQL (Django's BigAutoField); SQLite needs INTEGER to alias the rowid.
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    username: Mapped[str] = mapped_column(String(USERNAME_MAX), unique=True)
    password: Mapped[str] = mapped_column(String(PASSWORD_HASH_MAX))
    # Stored normalised (trimmed, lower-cased), so the unique constraint is case-insensitive.
    email: Mapped[str] = mapped_column(String(EMAIL_MAX), unique=True)
    first_name: Mapped[str] = mapped_column(String(NAME_MAX), default="", server_default=text("''"))
    last_name: Mapped[str] = mapped_column(String(NAME_MAX), default="", server_default=text("''"))
    number_phone: Mapped[str] = mapped_column(
        String(PHONE_MAX), default="", server_default=text("''")
    )
    avatar: Mapped[str | None] = mapped_column(String(AVATAR_MAX), default=None)
    date_joined: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_login: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    is_active: Mapped[bool] = mapped_column(default=True, server_default=true())
    is_staff: Mapped[bool] = mapped_column(default=False, server_default=false())
    is_superuser: Mapped[bool] = mapped_column(default=False, server_default=false())
    # Set by the Django import on the rows it creates. Only such accounts may be updated by a
    # later import or reached with a legacy SimpleJWT token: an account created here never is.
    imported: Mapped[bool] = mapped_column(default=False, server_default=false())
    # Tokens issued before this moment are refused (logout-all, password change,
    # deactivation): it ends our tokens and, above all, legacy ones, which have no session.
    tokens_valid_after: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    # When the current address was confirmed (a verification link, createsuperuser, an
    # admin, `import-django --emails-verified`); None: unverified. Cleared when it changes.
    email_verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)

    def __repr__(self) -> str:  # never include the password hash
        return f"<User id={self.id} username={self.username!r}>"


@dataclass(frozen=True, slots=True)
class UserSnapshot:
    """A user as an authenticated request that writes nothing sees them (the profile, staff
    reads): the profile's fields, the flags and what token checks need, never the
    password hash.

    Built straight from a row it costs a small part of an ORM instance's construction (on
    the hottest path of the service), and it belongs to no session: nothing can be
    written through it.
    """

    id: int
    username: str
    email: str
    first_name: str
    last_name: str
    number_phone: str
    avatar: str | None
    date_joined: datetime
    last_login: datetime | None
    is_active: bool
    is_staff: bool
    is_superuser: bool
    imported: bool
    tokens_valid_after: datetime | None

    @classmethod
    def of(cls, user: User) -> UserSnapshot:
        return cls(*(getattr(user, name) for name in SNAPSHOT_FIELDS))


SNAPSHOT_FIELDS = tuple(field.name for field in fields(UserSnapshot))
