"""The users aggregate's reads and writes: lookups, the login identifiers, row locks, the
superuser guard. The staff search is in `user_search`, the import's bulk statements in
`user_import`."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import delete as sa_delete
from sqlalchemy import (
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.exc import StaleDataError

from app.core.errors import EmailTaken, UsernameTaken, UserNotFound
from app.core.identifiers import claimed_identifiers, normalize_email, normalize_username
from app.models.login_identifier import LoginIdentifier
from app.models.user import User


async def get_by_id(db: AsyncSession, user_id: int) -> User | None:
    return await db.get(User, user_id)


async def get_by_email(db: AsyncSession, email: str) -> User | None:
    """The user whose (normalised) email is ``email``, itself normalised by the caller."""
    result: User | None = await db.scalar(select(User).where(User.email == email))
    return result


async def get_by_login(db: AsyncSession, identifier: str) -> User | None:
    """The user whose username (NFKC, as Django's login form) or email (normalised) is
    ``identifier``. An identifier that names two accounts (a username equal to another
    account's email: only rows from before migration 0005 can be so) names none."""
    username = normalize_username(identifier)
    email = normalize_email(identifier)
    rows = await db.scalars(
        select(User).where(or_(User.username == username, User.email == email)).limit(2)
    )
    candidates = list(rows)
    return candidates[0] if len(candidates) == 1 else None


async def check_identifiers_free(
    db: AsyncSession,
    username: str,
    email: str,
    exclude_id: int | None = None,
    changed: Collection[str] = ("username", "email"),
) -> None:
    """UsernameTaken or EmailTaken when another account (than ``exclude_id``) has this
    username, or holds one of the login identifiers that the ``changed`` fields of this
    username and email would claim (a username may not be another account's email, nor an
    email another's username).

    Gives the common case its answer; the unique constraints decide races (`add`,
    `claim_identifiers`)."""
    same_username = select(User.id).where(User.username == username)
    claims = claimed_identifiers(username, email, changed)
    held = select(LoginIdentifier.identifier).where(LoginIdentifier.identifier.in_(claims))
    if exclude_id is not None:
        same_username = same_username.where(User.id != exclude_id)
        held = held.where(LoginIdentifier.user_id != exclude_id)
    if "username" in changed and await db.scalar(same_username.limit(1)) is not None:
        raise UsernameTaken()
    taken = {claims[digest] for digest in await db.scalars(held)}
    if taken:
        raise UsernameTaken() if "username" in taken else EmailTaken()


async def add(db: AsyncSession, user: User) -> User:
    """Insert with its login identifiers; a unique-constraint race becomes UsernameTaken
    or EmailTaken."""
    db.add(user)
    await save(db)
    await _insert_claims(db, user.id, claimed_identifiers(user.username, user.email))
    return user


async def claim_identifiers(
    db: AsyncSession, user: User, changed: Collection[str] = ("username", "email")
) -> None:
    """Make the user's rows in ``login_identifiers`` those of their username and email:
    stale ones are released, the ``changed`` fields' new ones claimed (the username's
    first, so that a clash on both is reported as the username's). A claim another account
    holds is a 409. (An unchanged field is not claimed again: an account from before
    migration 0005 may lack a claim that another account holds.)"""
    claims = claimed_identifiers(user.username, user.email)
    current = set(
        await db.scalars(
            select(LoginIdentifier.identifier).where(LoginIdentifier.user_id == user.id)
        )
    )
    stale = current - claims.keys()
    if stale:
        await db.execute(sa_delete(LoginIdentifier).where(LoginIdentifier.identifier.in_(stale)))
    new = {
        digest: field
        for digest, field in claimed_identifiers(user.username, user.email, changed).items()
        if digest not in current
    }
    await _insert_claims(db, user.id, new)


async def _insert_claims(db: AsyncSession, user_id: int, claims: dict[str, str]) -> None:
    """One statement per claim, in order: a clash tells which field it was."""
    for digest, field in claims.items():
        try:
            await db.execute(insert(LoginIdentifier).values(identifier=digest, user_id=user_id))
        except IntegrityError:
            raise UsernameTaken() if field == "username" else EmailTaken() from None


async def save(db: AsyncSession) -> None:
    """Flush pending changes; a unique-constraint race becomes UsernameTaken or EmailTaken,
    and an UPDATE that finds the row gone (deleted by a request that committed after we
    loaded it) UserNotFound, as if the delete had come first."""
    try:
        await db.flush()
    except IntegrityError as exc:
        raise _conflict_error(exc) from None
    except StaleDataError:
        raise UserNotFound() from None


async def set_tokens_valid_after(db: AsyncSession, user_id: int, moment: datetime) -> None:
    await db.execute(
        update(User)
        .where(User.id == user_id)
        .values(tokens_valid_after=moment)
        .execution_options(synchronize_session=False)
    )


async def delete(db: AsyncSession, user: User) -> None:
    """Delete the row; 404 when a concurrent request deleted it first."""
    result = await db.execute(
        sa_delete(User).where(User.id == user.id).execution_options(synchronize_session=False)
    )
    assert isinstance(result, CursorResult)
    if result.rowcount != 1:
        raise UserNotFound()
    db.expunge(user)


async def lock_avatar(db: AsyncSession, user: User) -> str | None:
    """Re-read the user's avatar with the row locked, so that of two uploads at once each
    sees the file the other replaced and no file is left behind unreferenced.

    PostgreSQL: SELECT ... FOR UPDATE. SQLite has no row locks, and the driver starts the
    transaction at the first write: a no-op UPDATE takes the database's write lock first,
    so the read sees the latest committed avatar and nobody changes it before we commit.
    """
    if db.get_bind().dialect.name == "sqlite":
        await db.execute(
            update(User).where(User.id == user.id).values(avatar=User.avatar),
            execution_options={"synchronize_session": False},
        )
    await db.refresh(user, ["avatar"], with_for_update=True)
    return user.avatar


async def lock_active_superusers(db: AsyncSession) -> None:
    """Lock the active superusers' rows (PostgreSQL; in id order, so no deadlock) and reload
    them: two requests demoting the last two superusers then run one after the other.
    SQLite serialises writers, and the count taken after the write settles it there."""
    await db.scalars(
        select(User)
        .where(*_ACTIVE_SUPERUSER)
        .order_by(User.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )


async def count_active_superusers(db: AsyncSession) -> int:
    count = await db.scalar(select(func.count()).select_from(User).where(*_ACTIVE_SUPERUSER))
    return int(count or 0)


_ACTIVE_SUPERUSER = (User.is_active.is_(True), User.is_superuser.is_(True))


def _conflict_error(exc: IntegrityError) -> UsernameTaken | EmailTaken:
    # SQLite: "UNIQUE constraint failed: users.email"; PostgreSQL: "uq_users_email".
    message = str(exc.orig)
    if "email" in message:
        return EmailTaken()
    if "username" in message:
        return UsernameTaken()
    raise exc
