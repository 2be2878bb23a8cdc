"""The signed-in user's account: profile changes, avatar, password change, deletion.

Also the rules admin.py shares: applying profile changes with a clear 409, removing a user
(and their avatar file), keeping at least one active superuser.

Files and transactions: a new avatar is written (atomically) before the database change and
deleted again if the transaction rolls back or its commit fails; a replaced or orphaned
avatar is deleted only after the commit, when no row points to it any more.
"""

from __future__ import annotations

import secrets
from functools import partial
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import Settings
from app.core.db import after_commit, after_rollback
from app.core.errors import (
    FileTooLarge,
    InvalidCurrentPassword,
    LastSuperuser,
    PasswordRejected,
)
from app.core.images import ImageProcessor
from app.core.password_policy import password_problems, user_attributes
from app.core.security import PasswordHasher
from app.core.storage import MediaStorage
from app.models.user import User
from app.repositories import users as users_repo
from app.schemas.user import PasswordChange, ProfileUpdate
from app.services import audit, email_verification
from app.services.audit import EventType, Origin
from app.services.password_reset import password_changed
from app.services.throttle import Throttle, account_key

AVATAR_DIRECTORY = "avatars"
CREDENTIAL_FIELDS = ("username", "email")  # changing these needs the current password


async def verify_current_password(
    hasher: PasswordHasher, throttle: Throttle, user: User, password: str | None
) -> None:
    """403 unless ``password`` is the user's password; guesses are throttled per account and
    count in the account's login ceiling (429), so a stolen access token is no unlimited
    password oracle."""
    if password is None:
        raise InvalidCurrentPassword(
            "The current password is required to change the email or username"
        )
    account = account_key(user.id)
    await throttle.password_attempt(account)
    check = await hasher.verify(password, user.password)
    if not check.valid:
        raise InvalidCurrentPassword()
    await throttle.password_accepted(account)
    if check.new_hash is not None:
        user.password = check.new_hash  # as at login: upgrade a Django or older hash


async def update_profile(
    db: AsyncSession,
    settings: Settings,
    hasher: PasswordHasher,
    throttle: Throttle,
    user: User,
    data: ProfileUpdate,
    origin: Origin,
) -> User:
    """Partial update; the email or username only change with the current password (a
    stolen access token alone cannot take over the account's identity). A new email is
    unverified and gets a link; the old one a notice (`email_verification.email_changed`)."""
    changes = _changed(user, data.model_dump(exclude_unset=True, exclude={"current_password"}))
    if data.current_password is not None or any(field in changes for field in CREDENTIAL_FIELDS):
        await verify_current_password(hasher, throttle, user, data.current_password)
    old_email = user.email
    await apply_changes(db, user, changes)
    if changes:
        audit.record(
            db,
            EventType.PROFILE_UPDATED,
            user_id=user.id,
            actor_id=user.id,
            origin=origin,
            details=audit.fields_changed(list(changes)),
        )
    if "email" in changes:
        await email_verification.email_changed(
            db, settings, user, old_email, actor_id=user.id, origin=origin
        )
    return user


async def apply_changes(db: AsyncSession, user: User, changes: dict[str, Any]) -> None:
    """Set validated fields; a taken username or email (or one that is another account's
    login identifier) is a 409, decided by the unique constraints when two requests race
    (the check first gives the common case its answer)."""
    identifiers_change = "username" in changes or "email" in changes
    if identifiers_change:
        await users_repo.check_identifiers_free(
            db,
            changes.get("username", user.username),
            changes.get("email", user.email),
            exclude_id=user.id,
            changed=changes.keys(),
        )
    for field, value in changes.items():
        setattr(user, field, value)
    await users_repo.save(db)
    if identifiers_change:
        await users_repo.claim_identifiers(db, user, changes.keys())


async def change_password(
    db: AsyncSession,
    hasher: PasswordHasher,
    throttle: Throttle,
    user: User,
    data: PasswordChange,
    origin: Origin,
) -> None:
    """403 for a wrong current password, 422 when the new one breaks a registration rule.

    Every session of the user ends, this one included: whoever may have the old password
    (or a token) must log in again with the new one. A pending reset link is cancelled and
    the account's address gets a notice (`password_reset.password_changed`).
    """
    await verify_current_password(hasher, throttle, user, data.current_password)
    problems = password_problems(
        data.new_password,
        user_attributes(user.username, user.email, user.first_name, user.last_name),
    )
    if problems:
        raise PasswordRejected(problems, field="new_password")
    user.password = await hasher.hash(data.new_password)
    await password_changed(db, user, origin)


async def delete_account(
    db: AsyncSession,
    hasher: PasswordHasher,
    throttle: Throttle,
    storage: MediaStorage,
    user: User,
    current_password: str,
    origin: Origin,
) -> None:
    """The user deletes themselves: their username and email become free again."""
    await verify_current_password(hasher, throttle, user, current_password)
    await remove_user(db, storage, user)
    audit.record(db, EventType.ACCOUNT_DELETED, user_id=user.id, actor_id=user.id, origin=origin)


async def remove_user(db: AsyncSession, storage: MediaStorage, user: User) -> None:
    """Delete the row (never the last active superuser), then, once committed, the avatar.
    The user's sessions go with the row (ON DELETE CASCADE)."""
    guarded = user.is_active and user.is_superuser
    if guarded:
        await users_repo.lock_active_superusers(db)
    avatar = user.avatar
    await users_repo.delete(db, user)
    if guarded:
        await ensure_a_superuser_remains(db)
    if avatar:
        after_commit(db, partial(storage.delete, avatar))


async def ensure_a_superuser_remains(db: AsyncSession) -> None:
    """Called after the change is flushed (with the superusers locked beforehand): the count
    then includes this transaction's change and, on PostgreSQL, every committed one."""
    if await users_repo.count_active_superusers(db) == 0:
        raise LastSuperuser()


async def set_avatar(
    db: AsyncSession,
    storage: MediaStorage,
    images: ImageProcessor,
    user: User,
    data: bytes,
    origin: Origin,
) -> User:
    """Validate and re-encode the image, store it under a new random name, point the user
    to it; the previous file is deleted after the commit."""
    if len(data) > images.max_bytes:
        raise FileTooLarge(images.max_bytes)
    image = await images.avatar(data)
    name = f"{AVATAR_DIRECTORY}/{secrets.token_hex(16)}.{image.extension}"
    after_rollback(db, partial(storage.delete, name))
    await storage.save(name, image.data)
    previous = await users_repo.lock_avatar(db, user)
    user.avatar = name
    await users_repo.save(db)
    _avatar_changed(db, user, origin, removed=False)
    if previous:
        after_commit(db, partial(storage.delete, previous))
    return user


async def delete_avatar(
    db: AsyncSession, storage: MediaStorage, user: User, origin: Origin
) -> User:
    previous = await users_repo.lock_avatar(db, user)
    if previous is not None:
        user.avatar = None
        await users_repo.save(db)
        _avatar_changed(db, user, origin, removed=True)
        after_commit(db, partial(storage.delete, previous))
    return user


def _avatar_changed(db: AsyncSession, user: User, origin: Origin, *, removed: bool) -> None:
    audit.record(
        db,
        EventType.AVATAR_CHANGED,
        user_id=user.id,
        actor_id=user.id,
        origin=origin,
        details={"removed": removed},
    )


def _changed(user: User, values: dict[str, Any]) -> dict[str, Any]:
    return {field: value for field, value in values.items() if getattr(user, field) != value}
