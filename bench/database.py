"""Scratch PostgreSQL databases and what the benchmarks put in them.

``admin_url`` is a libpq URL of a role that may create databases (``postgresql://...``);
each benchmark reads it from its own variable (see its module).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import uuid
from collections.abc import Iterator, Sequence

import asyncpg

from app.core.security import TokenCodec, new_jti

STAFF_USER_ID = 1
FIRST_NAMES = ["Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi"]


async def _admin(admin_url: str, statement: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def database_url(admin_url: str, name: str, driver: str = "postgresql") -> str:
    """``admin_url`` pointing at database ``name``, with the URL scheme ``driver``."""
    base, _, _ = admin_url.rpartition("/")
    _, _, rest = base.partition("://")
    return f"{driver}://{rest}/{name}"


@contextlib.contextmanager
def scratch_database(admin_url: str) -> Iterator[str]:
    """A new, empty database on ``admin_url``'s server, dropped afterwards; yields its name."""
    name = f"userservice_bench_{os.getpid()}_{secrets.token_hex(3)}"
    asyncio.run(_admin(admin_url, f'CREATE DATABASE "{name}"'))
    try:
        yield name
    finally:
        asyncio.run(_admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def seed_users(
    dsn: str, first: int, last: int, password_hash: str, *, advance_sequence: bool = True
) -> None:
    """Users ``first..last`` in one INSERT ... SELECT generate_series; user 1 is staff.
    With ``advance_sequence`` the ids of registrations go on after the highest."""
    names = "ARRAY[" + ",".join(f"'{name}'" for name in FIRST_NAMES) + "]"
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            f"""
            INSERT INTO users (id, username, password, email, first_name, last_name,
                               number_phone, avatar, date_joined, last_login,
                               is_active, is_staff, is_superuser)
            SELECT i, 'user' || i, $1, 'user' || i || '@example.com',
                   ({names})[1 + i % {len(FIRST_NAMES)}],
                   'ln' || substr(md5(i::text), 1, 10),
                   lpad((i % 10000000000)::text, 10, '0'), NULL,
                   now() - make_interval(secs => i), NULL,
                   true, i = {STAFF_USER_ID}, false
            FROM generate_series($2::bigint, $3::bigint) AS i
            """,  # noqa: S608 (constants, no input)
            password_hash,
            first,
            last,
        )
        if advance_sequence:
            await conn.execute(
                "SELECT setval(pg_get_serial_sequence('users', 'id'), (SELECT max(id) FROM users))"
            )
        # VACUUM as autovacuum would: it also empties the GIN pending list, which every
        # trigram search otherwise reads through.
        await conn.execute("VACUUM ANALYZE users")
        # Write the seeding's dirty pages out now: left to the checkpointer, a million rows
        # and their indexes are flushed over the next minutes, during the measurements.
        with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
            await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


# Seeded events come from this many addresses (10.<a>.<b>.1), so an address has events of
# several accounts, as a shared network's would.
EVENT_ADDRESSES = 50_000
EVENT_TYPES = ("login.succeeded", "login.failed", "session.ended", "profile.updated")


async def seed_events(dsn: str, first: int, last: int, users: int) -> None:
    """Audit events ``first..last`` (one per seeded user on average), oldest first: event
    ``i`` concerns user ``1 + i % users`` and comes from address ``i % EVENT_ADDRESSES``."""
    types = "ARRAY[" + ",".join(f"'{name}'" for name in EVENT_TYPES) + "]"
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            f"""
            INSERT INTO audit_events (id, type, at, user_id, actor_id, ip, user_agent,
                                      request_id, details)
            SELECT i, ({types})[1 + i % {len(EVENT_TYPES)}],
                   now() - make_interval(secs => $2::bigint - i),
                   1 + i % $3::bigint, 1 + i % $3::bigint,
                   '10.' || (i % {EVENT_ADDRESSES}) / 250 || '.' || (i % {EVENT_ADDRESSES}) % 250
                       || '.1',
                   'Mozilla/5.0 (bench)', md5(i::text), '{{}}'
            FROM generate_series($1::bigint, $2::bigint) AS i
            """,  # noqa: S608 (constants, no input)
            first,
            last,
            users,
        )
        await conn.execute(
            "SELECT setval(pg_get_serial_sequence('audit_events', 'id'), "
            "(SELECT max(id) FROM audit_events))"
        )
        await conn.execute("VACUUM ANALYZE audit_events")
    finally:
        await conn.close()


# Accounts seeded for one run each (bench/runner.py's password changes) take ids from here
# on: far above the seeded users and the registrations, which the sequence numbers.
FRESH_FIRST_ID = 1_000_000_000


async def seed_fresh_users(dsn: str, count: int, password_hash: str) -> tuple[int, int]:
    """``count`` more users with ids from ``FRESH_FIRST_ID`` on, after any seeded before
    (registrations still running are not in their way); their first and last id."""
    conn = await asyncpg.connect(dsn)
    try:
        first = int(
            await conn.fetchval(
                "SELECT greatest(max(id) + 1, $1) FROM users WHERE id >= $1", FRESH_FIRST_ID
            )
        )
    finally:
        await conn.close()
    last = first + count - 1
    await seed_users(dsn, first, last, password_hash, advance_sequence=False)
    return first, last


async def issue_auth_sessions(
    dsn: str, codec: TokenCodec, user_ids: Sequence[int], kind: str
) -> list[str]:
    """One session row per user id, and its access or refresh token."""
    rows = [(uuid.uuid4(), user_id, new_jti()) for user_id in user_ids]
    conn = await asyncpg.connect(dsn)
    try:
        await conn.executemany(
            "INSERT INTO auth_sessions (id, user_id, refresh_jti, created_at, expires_at, amr) "
            "VALUES ($1, $2, $3, now(), now() + $4::interval, 'pwd')",
            [(*row, codec.lifetime("refresh")) for row in rows],
        )
    finally:
        await conn.close()
    if kind == "access":
        return [codec.issue("access", uid, sid).token for sid, uid, _ in rows]
    return [codec.issue("refresh", uid, sid, jti=jti).token for sid, uid, jti in rows]


async def _backends(dsn: str) -> list[int]:
    """The PostgreSQL server processes serving the scratch database (the service's pools)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()
    return [int(row["pid"]) for row in rows]


def pin_backends(dsn: str, cpu: int) -> str:
    """Put the scratch database's backends on the load generator's CPU, so that the worker
    has its CPU to itself: left to the scheduler they land on the worker's CPU in some
    measurements and not in others (seen as rounds at two speeds). Only this run's
    backends are moved, and they end with it. Returns what was done, for the report."""
    if (os.cpu_count() or 1) <= cpu or not hasattr(os, "sched_setaffinity"):
        return "not pinned (one CPU)"
    pids = asyncio.run(_backends(dsn))
    moved = 0
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.sched_setaffinity(pid, {cpu})
            moved += 1
    if pids and not moved:
        return "not pinned (no permission to move PostgreSQL's processes)"
    return f"PostgreSQL backends of the run pinned to CPU {cpu}"


async def server_version(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()
