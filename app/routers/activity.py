"""Security activity: the signed-in user's devices and events; staff's view of them."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status

from app.core.errors import AuthSessionNotFound
from app.dependencies import (
    CurrentSignIn,
    CurrentUser,
    OriginDep,
    ReadSessionDep,
    ReadStaffUser,
    SessionDep,
    SuperUser,
)
from app.models.auth_session import AuthSession
from app.repositories.audit_events import EventFilter
from app.routers import API_PREFIX, operation_id
from app.routers.admin import USER_ERRORS_DESCRIBED, UserId
from app.routers.content_type import MediaTypeRoute
from app.routers.responses import (
    PARAMETER_ERRORS,
    SIGNED_IN_ERRORS,
    STAFF_ERRORS,
    error_responses,
)
from app.schemas.activity import (
    EventPage,
    EventPageQuery,
    EventRead,
    EventSearchQuery,
    OwnEventPage,
    OwnEventRead,
    SessionList,
    SessionRead,
)
from app.services import admin, audit, auth_sessions

router = APIRouter(
    prefix=API_PREFIX,
    tags=["activity"],
    route_class=MediaTypeRoute,
    generate_unique_id_function=operation_id,
)


def _session_list(sessions: Sequence[AuthSession], current: uuid.UUID | None) -> SessionList:
    return SessionList(
        items=[
            SessionRead(
                id=auth_session.id,
                created_at=auth_session.created_at,
                last_used_at=auth_session.refreshed_at or auth_session.created_at,
                expires_at=auth_session.expires_at,
                ip=auth_session.ip,
                user_agent=auth_session.user_agent,
                current=auth_session.id == current,
            )
            for auth_session in sessions
        ]
    )


@router.get(
    "/users/profile/sessions",
    response_model=SessionList,
    responses=error_responses(SIGNED_IN_ERRORS),
    summary="List the signed-in user's sessions (devices)",
    description="Live sessions only (not ended, not expired), newest first. `current` marks "
    "the one the request's access token belongs to.",
)
async def list_own_sessions(sign_in: CurrentSignIn, db: SessionDep) -> SessionList:
    sessions = await auth_sessions.live_sessions(db, sign_in.user.id)
    return _session_list(sessions, sign_in.auth_session_id)


@router.delete(
    "/users/profile/sessions/{session_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(
        SIGNED_IN_ERRORS,
        PARAMETER_ERRORS,
        AuthSessionNotFound,
        descriptions={
            422: "The id is longer than 64 characters.",
            404: "No live session of the signed-in user has this id (another user's, ended, "
            "expired or unknown: `session_not_found`), or the token's user no longer exists "
            "(`user_not_found`).",
        },
    ),
    summary="End one of the signed-in user's sessions",
    description="Its access and refresh tokens stop working at once. Ending the current "
    "session signs this client out.",
)
async def end_own_session(
    session_id: Annotated[str, Path(max_length=64, description="A session's `id`.")],
    user: CurrentUser,
    db: SessionDep,
    origin: OriginDep,
) -> Response:
    await auth_sessions.end_own(db, user, session_id, origin)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/users/profile/events",
    response_model=OwnEventPage,
    responses=error_responses(SIGNED_IN_ERRORS, PARAMETER_ERRORS),
    summary="The signed-in user's security events",
    description="Newest first, `limit` per page (1 to 200, default 50); pass `next_cursor` "
    "as `cursor` for the next page. Logins (also failed and throttled ones), session ends, "
    "password, email and profile changes of the account.",
)
async def list_own_events(
    query: Annotated[EventPageQuery, Query()], user: CurrentUser, db: SessionDep
) -> OwnEventPage:
    page = await audit.events(
        db, EventFilter(user_id=user.id), limit=query.limit, before_id=query.before_id
    )
    return OwnEventPage(
        items=[OwnEventRead.model_validate(event) for event in page.events],
        next_cursor=page.next_cursor,
    )


@router.get(
    "/events",
    response_model=EventPage,
    responses=error_responses(STAFF_ERRORS, PARAMETER_ERRORS),
    summary="Search the audit trail (staff)",
    description="Filter by `user_id`, `type`, `ip`, `since` (inclusive) and `until` "
    "(exclusive); newest first, `limit` per page (1 to 200, default 50), keyset pages "
    "through `cursor` (`next_cursor` of the previous page).",
)
async def search_events(
    query: Annotated[EventSearchQuery, Query()], _staff: ReadStaffUser, db: ReadSessionDep
) -> EventPage:
    where = EventFilter(
        user_id=query.user_id,
        type=query.type.value if query.type is not None else None,
        ip=query.ip,
        since=query.since,
        until=query.until,
    )
    page = await audit.events(db, where, limit=query.limit, before_id=query.before_id)
    return EventPage(
        items=[EventRead.model_validate(event) for event in page.events],
        next_cursor=page.next_cursor,
    )


@router.get(
    "/users/{user_id}/sessions",
    response_model=SessionList,
    responses=error_responses(STAFF_ERRORS, PARAMETER_ERRORS, descriptions=USER_ERRORS_DESCRIBED),
    summary="List a user's sessions (staff)",
    description="Live sessions only, newest first; `current` is always false here.",
)
async def list_user_sessions(
    user_id: UserId, _staff: ReadStaffUser, db: ReadSessionDep
) -> SessionList:
    await admin.get_user(db, user_id)
    return _session_list(await auth_sessions.live_sessions(db, user_id), None)


@router.delete(
    "/users/{user_id}/sessions",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(STAFF_ERRORS, PARAMETER_ERRORS, descriptions=USER_ERRORS_DESCRIBED),
    summary="End every session of a user (superuser)",
    description="Every access and refresh token of the user stops working at once.",
)
async def end_user_sessions(
    user_id: UserId, superuser: SuperUser, db: SessionDep, origin: OriginDep
) -> Response:
    await admin.end_sessions(db, user_id, superuser, origin)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
