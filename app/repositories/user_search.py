"""The staff user search: substring matches over four columns, and the trigram probe's
statistics (PostgreSQL: one pg_trgm GIN index, migration 0003)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    BindParameter,
    ColumnElement,
    Select,
    any_,
    bindparam,
    func,
    literal_column,
    or_,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from app.models.user import Ordering, User

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


async def common_search_trigrams(db: AsyncSession, share: float, min_rows: int) -> frozenset[str]:
    """PostgreSQL: the trigrams (pg_trgm's) of at least ``share`` of the search documents,
    and of at least ``min_rows`` of them, estimated from a sample. Elsewhere, none."""
    if db.get_bind().dialect.name != "postgresql":
        return frozenset()
    estimate = await db.scalar(text("SELECT reltuples FROM pg_class WHERE oid = 'users'::regclass"))
    table_rows = max(float(estimate or 0), 1.0)  # -1 before the first ANALYZE
    percent = min(100.0, max(0.01, 100.0 * TRIGRAM_SAMPLE_ROWS / table_rows))
    rows = await db.execute(
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
    db: AsyncSession,
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
    postgresql = db.get_bind().dialect.name == "postgresql"
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
        return await _search_capped(db, conditions, page)
    total = await db.scalar(select(func.count()).select_from(User).where(*conditions))
    rows = await db.scalars(page.where(*conditions))
    return rows.all(), int(total or 0)


async def _search_capped(
    db: AsyncSession, conditions: list[ColumnElement[bool]], page: Select[User]
) -> tuple[Sequence[User], int]:
    """The ids of up to TOTAL_CAP + 1 matches, in no order (the trigram index for a rare
    term, a sequential scan that stops early for a common one); when that is all of them,
    the page is sorted from those ids by primary key, else it is read with the filters
    (a common term: walking the ordering's index finds a page of matches quickly).

    A plain ``count(*)`` and ``ORDER BY id LIMIT`` take seconds at a million users: the
    count visits every match, and the planner walks the primary key for a rare term."""
    ids = list(await db.scalars(select(User.id).where(*conditions).limit(TOTAL_CAP + 1)))
    if len(ids) <= TOTAL_CAP:
        if not ids:
            return [], 0
        rows = await db.scalars(
            page.where(User.id == any_(bindparam("ids", ids, type_=ARRAY(BigInteger()))))
        )
        return rows.all(), len(ids)
    rows = await db.scalars(page.where(*conditions))
    return rows.all(), TOTAL_CAP + 1
