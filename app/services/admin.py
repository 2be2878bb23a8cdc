"""User management by staff (read) and superusers (change, delete)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import Settings
from app.core.errors import UserNotFound
from app.core.storage import MediaStorage
from app.models.user import User
from app.repositories import user_search
from app.repositories import users as users_repo
from app.schemas.user import AdminUserUpdate, UserListQuery
from app.services import audit, auth_sessions, email_verification
from app.services.account import apply_changes, ensure_a_superuser_remains, remove_user
from app.services.audit import EventType, Origin
from app.services.search_probe import (
    COMMON_MIN_ROWS,
    COMMON_SHARE,
    TrigramStats,
    rare_fragment,
)


async def list_users(
    db: AsyncSession, query: UserListQuery, trigram_stats: TrigramStats
) -> tuple[Sequence[User], int]:
    fragment = None
    if query.search:
        common = await trigram_stats.common(
            partial(user_search.common_search_trigrams, db, COMMON_SHARE, COMMON_MIN_ROWS)
        )
        fragment = rare_fragment(query.search, common)
    return await user_search.search(
        db,
        text=query.search,
        is_active=query.is_active,
        is_staff=query.is_staff,
        ordering=query.ordering,
        limit=query.limit,
        offset=query.offset,
        index_fragment=fragment,
    )


async def get_user(db: AsyncSession, user_id: int) -> User:
    user = await users_repo.get_by_id(db, user_id)
    if user is None:
        raise UserNotFound()
    return user


# Flags whose old and new values the audit trail keeps (they are no profile values).
AUDITED_FLAGS = ("is_active", "is_staff", "is_superuser")


async def update_user(
    db: AsyncSession,
    settings: Settings,
    user_id: int,
    data: AdminUserUpdate,
    actor: User,
    origin: Origin,
) -> User:
    """Profile fields and flags. Deactivating or demoting the last active superuser is a 409.

    Deactivation takes effect at once (the current-user dependency loads the user on every
    request) and ends every session, so reactivating does not revive old tokens. A new
    email is unverified (a link goes there, a notice to the old one) unless
    ``email_verified`` says otherwise in the same request.
    """
    user = await get_user(db, user_id)
    email_verified = data.email_verified
    changes = {
        field: value
        for field, value in data.model_dump(exclude_unset=True, exclude={"email_verified"}).items()
        if getattr(user, field) != value
    }
    old_email = user.email
    was_verified = user.email_verified_at is not None
    flags = {
        flag: {"old": getattr(user, flag), "new": changes[flag]}
        for flag in AUDITED_FLAGS
        if flag in changes
    }
    demotes = (
        user.is_active
        and user.is_superuser
        and (changes.get("is_active") is False or changes.get("is_superuser") is False)
    )
    if demotes:
        await users_repo.lock_active_superusers(db)
    await apply_changes(db, user, changes)
    if demotes:
        await ensure_a_superuser_remains(db)
    if changes.get("is_active") is False:
        await auth_sessions.revoke_all(db, user.id)
    if "email" in changes:
        await email_verification.email_changed(
            db,
            settings,
            user,
            old_email,
            actor_id=actor.id,
            origin=origin,
            verified=email_verified is True,
        )
    elif email_verified is not None:
        await email_verification.set_verified(db, user, email_verified)
    if (user.email_verified_at is not None) != was_verified:
        flags["email_verified"] = {"old": was_verified, "new": not was_verified}
    if changes or flags:
        audit.record(
            db,
            EventType.ADMIN_USER_UPDATED,
            user_id=user.id,
            actor_id=actor.id,
            origin=origin,
            details={**audit.fields_changed(list(changes)), "flags": flags},
        )
    return user


async def delete_user(
    db: AsyncSession, storage: MediaStorage, user_id: int, actor: User, origin: Origin
) -> None:
    """Delete a user (their sessions cascade) and, after the commit, their avatar file."""
    await remove_user(db, storage, await get_user(db, user_id))
    audit.record(
        db, EventType.ADMIN_USER_DELETED, user_id=user_id, actor_id=actor.id, origin=origin
    )


async def end_sessions(db: AsyncSession, user_id: int, actor: User, origin: Origin) -> None:
    """A superuser ends every session of a user (404 for an unknown one)."""
    await get_user(db, user_id)
    await auth_sessions.end_all(db, user_id, actor_id=actor.id, origin=origin)
