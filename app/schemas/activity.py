"""Security activity: the signed-in devices (auth sessions) and the audit trail."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from app.models.audit_event import IP_MAX
from app.models.user import ID_MAX
from app.services.audit import EventType, normalise_ip

EVENTS_PAGE_DEFAULT = 50
EVENTS_PAGE_MAX = 200


class SessionRead(BaseModel):
    """One live login (a refresh-token family)."""

    id: uuid.UUID
    created_at: datetime = Field(description="When the login happened.")
    last_used_at: datetime = Field(
        description="The last refresh of its tokens (the login itself if never refreshed)."
    )
    expires_at: datetime = Field(
        description="When it ends unless refreshed again (its refresh token's expiry)."
    )
    ip: str | None = Field(description="The client address at login, if known.")
    user_agent: str | None = Field(description="The User-Agent at login (truncated).")
    current: bool = Field(description="The request's own access token belongs to it.")


class SessionList(BaseModel):
    items: list[SessionRead]


Cursor = Annotated[str, StringConstraints(pattern=r"^[0-9]{1,19}$")]


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class EventPageQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=EVENTS_PAGE_DEFAULT, ge=1, le=EVENTS_PAGE_MAX)
    cursor: Cursor | None = Field(
        default=None, description="`next_cursor` of the previous page (opaque)."
    )

    @property
    def before_id(self) -> int | None:
        return int(self.cursor) if self.cursor is not None else None


class EventSearchQuery(EventPageQuery):
    user_id: int | None = Field(default=None, ge=1, le=ID_MAX, description="The account.")
    type: EventType | None = None
    ip: Annotated[str, StringConstraints(strip_whitespace=True, max_length=IP_MAX)] | None = Field(
        default=None, description="The client address (IPv4 or IPv6)."
    )
    since: datetime | None = Field(default=None, description="At or after (UTC if no zone).")
    until: datetime | None = Field(default=None, description="Before (UTC if no zone).")

    @field_validator("ip")
    @classmethod
    def _ip(cls, value: str | None) -> str | None:
        if value is None:
            return None
        address = normalise_ip(value)
        if address is None:
            raise ValueError("not an IP address")
        return address

    _zoned = field_validator("since", "until")(_utc)


class OwnEventRead(BaseModel):
    """An event of the signed-in user's account."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    type: str
    at: datetime
    ip: str | None
    user_agent: str | None
    details: dict[str, Any]


class EventRead(OwnEventRead):
    """An event, for staff: also who it concerns, who did it and the request."""

    user_id: int | None = Field(description="The account concerned (kept after its deletion).")
    actor_id: int | None = Field(description="Who did it: the user, a superuser, or null.")
    request_id: str | None


class OwnEventPage(BaseModel):
    items: list[OwnEventRead]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null at the end."
    )


class EventPage(BaseModel):
    items: list[EventRead]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null at the end."
    )
