"""All SQL for the users aggregate."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal, cast

from sqlalchemy import (
    BigInteger,
    BindParameter,
    ColumnElement,
    Select,
    Table,
    any_,
    bindparam,
    func,
    insert,
    literal_column,
    or_,
    select,
    text,
    update,
)
from sqlalchemy import delete as sa_delete
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.orm.exc import StaleDataError

from app.core.errors import EmailTaken, UsernameTaken, UserNotFound
from app.core.identifiers import claimed_identifiers, normalize_email, normalize_username
from app.models.login_identifier import LoginIdentifier
from app.models.user import User


async def get_by_id(session: AsyncSession, user_id: int) -> User | None:
    return await session.get(User, user_id)


async def get_by_login(session: AsyncSession, identifier: str) -> User | None:
    """The user whose username (NFKC, as Django's login form) or email (normalised) is
    ``identifier``. An identifier that names two accounts (a username equal to another
    account's email: only rows from before migration 0005 can be so) names none."""
    username = normalize_username(identifier)
    email = normalize_email(identifier)
    rows = await session.scalars(
        select(User).where(or_(User.username == username, User.email == email)).limit(2)
    )
    candidates = list(rows)
    return candidates[0] if len(candidates) == 1 else None


async def check_identifiers_free(
    session: AsyncSession,
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
    if "username" in changed and await session.scalar(same_username.limit(1)) is not None:
        raise UsernameTaken()
    taken = {claims[digest] for digest in await session.scalars(held)}
    if taken:
        raise UsernameTaken() if "username" in taken else EmailTaken()


async def add(session: AsyncSession, user: User) -> User:
    """Insert with its login identifiers; a unique-constraint race becomes UsernameTaken
    or EmailTaken."""
    session.add(user)
    await save(session)
    await _insert_claims(session, user.id, claimed_identifiers(user.username, user.email))
    return user


async def claim_identifiers(
    session: AsyncSession, user: User, changed: Collection[str] = ("username", "email")
) -> None:
    """Make the user's rows in ``login_identifiers`` those of their username and email:
    stale ones are released, the ``changed`` fields' new ones claimed (the username's
    first, so that a clash on both is reported as the username's). A claim another account
    holds is a 409. (An unchanged field is not claimed again: an account from before
    migration 0005 may lack a claim that another account holds.)"""
    claims = claimed_identifiers(user.username, user.email)
    current = set(
        await session.scalars(
            select(LoginIdentifier.identifier).where(LoginIdentifier.user_id == user.id)
        )
    )
    stale = current - claims.keys()
    if stale:
        await session.execute(
            sa_delete(LoginIdentifier).where(LoginIdentifier.identifier.in_(stale))
        )
    new = {
        digest: field
        for digest, field in claimed_identifiers(user.username, user.email, changed).items()
        if digest not in current
    }
    await _insert_claims(session, user.id, new)


async def _insert_claims(session: AsyncSession, user_id: int, claims: dict[str, str]) -> None:
    """One statement per claim, in order: a clash tells which field it was."""
    for digest, field in claims.items():
        try:
            await session.execute(
                insert(LoginIdentifier).values(identifier=digest, user_id=user_id)
            )
        except IntegrityError:
            raise UsernameTaken() if field == "username" else EmailTaken() from None


async def save(session: AsyncSession) -> None:
    """Flush pending changes; a unique-constraint race becomes UsernameTaken or EmailTaken,
    and an UPDATE that finds the row gone (deleted by a request that committed after we
    loaded it) UserNotFound, as if the delete had come first."""
    try:
        await session.flush()
    except IntegrityError as exc:
        raise _conflict_error(exc) from None
    except StaleDataError:
        raise UserNotFound() from None


async def set_tokens_valid_after(session: AsyncSession, user_id: int, moment: datetime) -> None:
    await session.execute(
        update(User)
        .where(User.id == user_id)
        .values(tokens_valid_after=moment)
        .execution_options(synchronize_session=False)
    )


async def delete(session: AsyncSession, user: User) -> None:
    """Delete the row; 404 when a concurrent request deleted it first."""
    result = await session.execute(
        sa_delete(User).where(User.id == user.id).execution_options(synchronize_session=False)
    )
    assert isinstance(result, CursorResult)
    if result.rowcount != 1:
        raise UserNotFound()
    session.expunge(user)


async def lock_avatar(session: AsyncSession, user: User) -> str | None:
    """Re-read the user's avatar with the row locked, so that of two uploads at once each
    sees the file the other replaced and no file is left behind unreferenced.

    PostgreSQL: SELECT ... FOR UPDATE. SQLite has no row locks, and the driver starts the
    transaction at the first write: a no-op UPDATE takes the database's write lock first,
    so the read sees the latest committed avatar and nobody changes it before we commit.
    """
    if session.get_bind().dialect.name == "sqlite":
        await session.execute(
            update(User).where(User.id == user.id).values(avatar=User.avatar),
            execution_options={"synchronize_session": False},
        )
    await session.refresh(user, ["avatar"], with_for_update=True)
    return user.avatar


async def lock_active_superusers(session: AsyncSession) -> None:
    """Lock the active superusers' rows (PostgreSQL; in id order, so no deadlock) and reload
    them: two requests demoting the last two superusers then run one after the other.
    SQLite serialises writers, and the count taken after the write settles it there."""
    await session.scalars(
        select(User)
        .where(*_ACTIVE_SUPERUSER)
        .order_by(User.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )


async def count_active_superusers(session: AsyncSession) -> int:
    count = await session.scalar(select(func.count()).select_from(User).where(*_ACTIVE_SUPERUSER))
    return int(count or 0)


_ACTIVE_SUPERUSER = (User.is_active.is_(True), User.is_superuser.is_(True))


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
_ORDER_COLUMNS: dict[str, InstrumentedAttribute[Any]] = {
    "id": User.id,
    "username": User.username,
    "email": User.email,
    "date_joined": User.date_joined,
    "last_login": User.last_login,
}


# PostgreSQL: the expression of the trigram index of migration 0003 (exactly; the planner
# only uses the index for the same expression).
SEARCH_DOCUMENT_SQL = "(username || ' ' || email || ' ' || first_name || ' ' || last_name)"
# PostgreSQL: ``total`` is exact up to this many matches; past it, it is TOTAL_CAP + 1.
TOTAL_CAP = 1000


def _like_pattern(text: str) -> str:
    """``%text%`` with ``/``, ``%`` and ``_`` escaped by ``/`` (as ``autoescape`` does)."""
    escaped = text.replace("/", "//").replace("%", "/%").replace("_", "/_")
    return f"%{escaped}%"


# Rows sampled to find the common trigrams. Row by row (BERNOULLI: it reads the whole
# table, ~0.3 s at a million users): a block sample (SYSTEM) takes runs of consecutive
# rows, whose shared pieces (the digits of neighbouring ids) then look common.
TRIGRAM_SAMPLE_ROWS = 5_000


async def common_search_trigrams(
    session: AsyncSession, share: float, min_rows: int
) -> frozenset[str]:
    """PostgreSQL: the trigrams (pg_trgm's) of at least ``share`` of the search documents,
    and of at least ``min_rows`` of them, estimated from a sample. Elsewhere, none."""
    if session.get_bind().dialect.name != "postgresql":
        return frozenset()
    estimate = await session.scalar(
        text("SELECT reltuples FROM pg_class WHERE oid = 'users'::regclass")
    )
    table_rows = max(float(estimate or 0), 1.0)  # -1 before the first ANALYZE
    percent = min(100.0, max(0.01, 100.0 * TRIGRAM_SAMPLE_ROWS / table_rows))
    rows = await session.execute(
        text(
            f"""
            WITH sample AS MATERIALIZED (
                SELECT show_trgm({SEARCH_DOCUMENT_SQL}) AS trigrams
                FROM users TABLESAMPLE BERNOULLI (:percent)
                LIMIT :most  -- bounded even when the row estimate is stale (after a bulk load)
            )
            SELECT trigram, count(*) AS hits, (SELECT count(*) FROM sample) AS sampled
            FROM sample, unnest(trigrams) AS trigram
            GROUP BY trigram
            HAVING count(*) >= CAST(:share AS float8) * (SELECT count(*) FROM sample)
            """  # noqa: S608 (a constant expression; values bound)
        ),
        {"percent": percent, "share": share, "most": 2 * TRIGRAM_SAMPLE_ROWS},
    )
    common = set()
    for trigram, hits, sampled in rows:
        if hits * max(table_rows, sampled) / sampled >= min_rows:
            common.add(str(trigram))
    return frozenset(common)


async def search(
    session: AsyncSession,
    *,
    text: str | None,
    is_active: bool | None,
    is_staff: bool | None,
    ordering: Ordering,
    limit: int,
    offset: int,
    index_fragment: str | None = None,
) -> tuple[Sequence[User], int]:
    """One page of users and the total matching. ``text`` matches username, email and names
    case-insensitively as a substring; LIKE wildcards and the escape character in it are
    escaped, so ``%`` or ``_`` only match themselves.

    PostgreSQL, where a million users are expected: ``total`` is exact when at most
    ``TOTAL_CAP`` users match, else ``TOTAL_CAP + 1`` ("more than"); see ``_search_capped``.
    The trigram index is probed with ``index_fragment`` (a piece of ``text``) when given,
    see app/services/search_probe.py; the matches are the same.
    """
    conditions: list[ColumnElement[bool]] = []
    postgresql = session.get_bind().dialect.name == "postgresql"
    if text:
        # literal_execute: the pattern is rendered into the statement, so PostgreSQL plans
        # each search with its real pattern (a generic plan of a prepared statement would
        # guess the selectivity, and pick a sequential scan for a rare name).
        pattern: BindParameter[str] = bindparam(
            "search_pattern", _like_pattern(text), literal_execute=postgresql
        )
        per_column = or_(
            *(
                column.ilike(pattern, escape="/")
                for column in (User.username, User.email, User.first_name, User.last_name)
            )
        )
        if postgresql:
            # The indexed document narrows the candidates (a substring of a column is one
            # of the document, and so is any piece of it); the per-column test keeps terms
            # spanning two columns out.
            probe: BindParameter[str] = bindparam(
                "search_probe", _like_pattern(index_fragment or text), literal_execute=True
            )
            conditions.append(literal_column(SEARCH_DOCUMENT_SQL).ilike(probe, escape="/"))
        conditions.append(per_column)
    if is_active is not None:
        conditions.append(User.is_active.is_(is_active))
    if is_staff is not None:
        conditions.append(User.is_staff.is_(is_staff))
    column = _ORDER_COLUMNS[ordering.removeprefix("-")]
    # last_login: NULLS LAST either way (SQLite and PostgreSQL disagree by default). The
    # other columns are NOT NULL, and an explicit NULLS LAST would keep PostgreSQL from
    # reading their indexes backwards (DESC is NULLS FIRST there). id breaks ties, so
    # pages neither repeat nor skip rows.
    order = column.desc() if ordering.startswith("-") else column.asc()
    if column is User.last_login:
        order = order.nulls_last()
    id_order = User.id.desc() if ordering.startswith("-") else User.id.asc()
    page = select(User).order_by(order, id_order).limit(limit).offset(offset)
    if postgresql:
        return await _search_capped(session, conditions, page)
    total = await session.scalar(select(func.count()).select_from(User).where(*conditions))
    rows = await session.scalars(page.where(*conditions))
    return rows.all(), int(total or 0)


async def _search_capped(
    session: AsyncSession, conditions: list[ColumnElement[bool]], page: Select[User]
) -> tuple[Sequence[User], int]:
    """The ids of up to TOTAL_CAP + 1 matches, in no order (the trigram index for a rare
    term, a sequential scan that stops early for a common one); when that is all of them,
    the page is sorted from those ids by primary key, else it is read with the filters
    (a common term: walking the ordering's index finds a page of matches quickly).

    A plain ``count(*)`` and ``ORDER BY id LIMIT`` take seconds at a million users: the
    count visits every match, and the planner walks the primary key for a rare term."""
    ids = list(await session.scalars(select(User.id).where(*conditions).limit(TOTAL_CAP + 1)))
    if len(ids) <= TOTAL_CAP:
        if not ids:
            return [], 0
        rows = await session.scalars(
            page.where(User.id == any_(bindparam("ids", ids, type_=ARRAY(BigInteger()))))
        )
        return rows.all(), len(ids)
    rows = await session.scalars(page.where(*conditions))
    return rows.all(), TOTAL_CAP + 1


def _conflict_error(exc: IntegrityError) -> UsernameTaken | EmailTaken:
    # SQLite: "UNIQUE constraint failed: users.email"; PostgreSQL: "uq_users_email".
    message = str(exc.orig)
    if "email" in message:
        return EmailTaken()
    if "username" in message:
        return UsernameTaken()
    raise exc


# Bulk operations for imports: one statement per batch, never a round trip per row.
_USERS = cast(Table, User.__table__)


async def ids_usernames_imported(session: AsyncSession) -> list[tuple[int, str, bool]]:
    result = await session.execute(select(User.id, User.username, User.imported))
    return [(row.id, row.username, row.imported) for row in result]


async def identifier_owners(session: AsyncSession) -> dict[str, int]:
    """Every claimed login identifier (digest) and the id of the account holding it."""
    result = await session.execute(select(LoginIdentifier.identifier, LoginIdentifier.user_id))
    return {row.identifier: row.user_id for row in result}


async def rows_in_id_range(session: AsyncSession, low: int, high: int) -> dict[int, dict[str, Any]]:
    """Column values (not ORM objects) of the users with ``low <= id <= high``, by id."""
    table = _USERS
    result = await session.execute(select(*table.c).where(table.c.id.between(low, high)))
    return {row.id: dict(row._mapping) for row in result}


async def insert_many(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    """One Core executemany (the ORM's bulk insert runs a statement per few rows on SQLite)."""
    if rows:
        await session.execute(insert(_USERS), list(rows))


async def update_many(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    """Update by primary key (each mapping holds ``id`` and the same other columns), as one
    executemany."""
    if not rows:
        return
    table = _USERS
    columns = [table.c[name] for name in rows[0] if name != "id"]
    statement = (
        update(table)
        .where(table.c.id == bindparam("key_id", type_=table.c.id.type))
        .values({c.name: bindparam(f"new_{c.name}", type_=c.type) for c in columns})
    )
    await session.execute(
        statement,
        [{f"new_{k}" if k != "id" else "key_id": v for k, v in row.items()} for row in rows],
    )


async def reclaim_identifiers_many(
    session: AsyncSession, rows: Sequence[Mapping[str, Any]]
) -> None:
    """`claim_identifiers` for many users at once (``id``, ``username``, ``email`` each): their
    claims are replaced; a clash raises IntegrityError (the import checks for them first)."""
    if not rows:
        return
    ids = [row["id"] for row in rows]
    await session.execute(sa_delete(LoginIdentifier).where(LoginIdentifier.user_id.in_(ids)))
    await session.execute(
        insert(LoginIdentifier),
        [
            {"identifier": digest, "user_id": row["id"]}
            for row in rows
            for digest in claimed_identifiers(row["username"], row["email"])
        ],
    )


async def move_id_counter_past(session: AsyncSession, floor: int) -> None:
    """The next generated id is above ``floor``, above every id in the table and above every
    id already handed out (never moved back: a deleted user's id is never reused)."""
    if session.get_bind().dialect.name == "postgresql":
        sequence = await session.scalar(text("SELECT pg_get_serial_sequence('users', 'id')"))
        # The sequence's next value: last_value, or the one after it once it was handed out
        # (pg_sequence_last_value() is NULL after setval(..., false): not enough here).
        handed_out = (
            f"(SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END "  # noqa: S608
            f"FROM {sequence})"  # the database's own quoted name
        )
        await session.execute(
            text(
                f"SELECT setval(:sequence, GREATEST(:floor, "  # noqa: S608
                f"(SELECT COALESCE(MAX(id), 0) FROM users), {handed_out}) + 1, false)"
            ),
            {"sequence": sequence, "floor": floor},
        )
        return
    # SQLite's AUTOINCREMENT hands out max(sqlite_sequence.seq, MAX(rowid)) + 1.
    result = await session.execute(
        text("UPDATE sqlite_sequence SET seq = MAX(seq, :floor) WHERE name = 'users'"),
        {"floor": floor},
    )
    assert isinstance(result, CursorResult)
    if result.rowcount == 0:
        await session.execute(
            text("INSERT INTO sqlite_sequence (name, seq) VALUES ('users', :floor)"),
            {"floor": floor},
        )
