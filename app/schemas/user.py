from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_serializer

from app.models.user import EMAIL_MAX, NAME_MAX, PHONE_MAX, USERNAME_MAX

MEDIA_URL = "/media/"


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
