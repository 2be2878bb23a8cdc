from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    field_serializer,
    field_validator,
)

from app.models.user import EMAIL_MAX, ID_MAX, NAME_MAX, PHONE_MAX, USERNAME_MAX, Ordering
from app.schemas.auth import CurrentPassword, NewPassword
from app.schemas.fields import (
    Email,
    PersonName,
    PhoneNumber,
    Username,
    reject_control_characters,
)

MEDIA_URL = "/media/"

SearchText = Annotated[
    str,
    AfterValidator(reject_control_characters),
    StringConstraints(strip_whitespace=True, max_length=max(EMAIL_MAX, NAME_MAX, USERNAME_MAX)),
]


class UserRead(BaseModel):
    """The public profile: exactly the twelve fields of the Django service's serializer."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    username: str = Field(max_length=USERNAME_MAX)
    email: str = Field(max_length=EMAIL_MAX)
    first_name: str = Field(max_length=NAME_MAX)
    last_name: str = Field(max_length=NAME_MAX)
    number_phone: str = Field(max_length=PHONE_MAX)
    avatar: str | None = Field(description="URL path of the avatar image, or null.")
    date_joined: datetime
    last_login: datetime | None
    is_active: bool
    is_staff: bool
    is_superuser: bool

    @field_serializer("avatar")
    def _avatar_url(self, avatar: str | None) -> str | None:
        return f"{MEDIA_URL}{avatar}" if avatar else None


def _not_null(value: object) -> object:
    if value is None:
        raise ValueError("may be left out but not null")
    return value


class ProfileFields(BaseModel):
    """The editable profile fields, all optional (a partial update); the same rules as at
    registration. Explicit nulls are refused: leave a field out to keep it."""

    model_config = ConfigDict(extra="forbid")

    username: Username | None = None
    email: Email | None = None
    first_name: PersonName | None = None
    last_name: PersonName | None = None
    number_phone: PhoneNumber | None = None

    _no_nulls = field_validator("username", "email", "first_name", "last_name", "number_phone")(
        _not_null
    )


class ProfileUpdate(ProfileFields):
    current_password: CurrentPassword | None = Field(
        default=None, description="Required to change the email or the username."
    )


class PasswordChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    current_password: CurrentPassword
    new_password: NewPassword


class AccountDelete(BaseModel):
    model_config = ConfigDict(extra="forbid")

    current_password: CurrentPassword


class AdminUserUpdate(ProfileFields):
    """What a superuser may change: the profile fields, the three flags and whether the
    address is verified."""

    is_active: StrictBool | None = None
    is_staff: StrictBool | None = None
    is_superuser: StrictBool | None = None
    email_verified: StrictBool | None = Field(
        default=None,
        description="Mark the address verified (true) or not (false). Changing `email` "
        "without it makes the new address unverified and emails it a link.",
    )

    _no_null_flags = field_validator("is_active", "is_staff", "is_superuser", "email_verified")(
        _not_null
    )


class EmailStatus(BaseModel):
    """The signed-in user's address and whether it is verified."""

    email: str
    verified: bool
    verified_at: datetime | None = Field(description="When it was verified; null if not.")


class UserListQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    search: SearchText | None = Field(
        default=None,
        description="Case-insensitive substring of the username, email, first or last name.",
    )
    is_active: bool | None = None
    is_staff: bool | None = None
    ordering: Ordering = Field(default="id", description="A field, `-` for descending.")
    limit: int = Field(default=20, ge=1, le=100)
    offset: int = Field(default=0, ge=0, le=ID_MAX)


class UserPage(BaseModel):
    items: list[UserRead]
    total: int = Field(
        description="Users matching the filters, on all pages. On PostgreSQL it is exact up "
        "to 1,000; 1001 means more than 1,000 match (the pages are still all there)."
    )
    limit: int
    offset: int
