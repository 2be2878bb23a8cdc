"""Migrations build the schema on both backends, reverse cleanly and match the models."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect
from sqlalchemy.ext.asyncio import create_async_engine

from alembic import command
from app.cli import alembic_config
from app.models import Base
from app.models.migration_only import include_object
from tests.conftest import new_database, server_env


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with new_database(request.param, tmp_path) as url:
        yield url


def _diff(connection: Connection) -> list[object]:
    context = MigrationContext.configure(
        connection,
        opts={
            "compare_type": True,
            "compare_server_default": True,
            "include_object": include_object,  # as alembic/env.py
        },
    )
    return list(compare_metadata(context, Base.metadata))


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


def _revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def _inspect(url: str) -> tuple[set[str], list[object]]:
    tables, diff, _ = await _inspect_with_revision(url)
    return tables, diff


async def _inspect_with_revision(url: str) -> tuple[set[str], list[object], str | None]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            tables = await connection.run_sync(_tables)
            diff = await connection.run_sync(_diff)
            revision = await connection.run_sync(_revision)
    finally:
        await engine.dispose()
    return tables, diff, revision


def test_upgrade_downgrade_upgrade_and_no_drift(empty_url: str) -> None:
    config = alembic_config(empty_url)
    command.upgrade(config, "head")
    tables, diff = asyncio.run(_inspect(empty_url))
    assert "users" in tables
    assert diff == []  # what `alembic check` verifies

    command.downgrade(config, "base")
    tables, _ = asyncio.run(_inspect(empty_url))
    assert "users" not in tables

    command.upgrade(config, "head")
    tables, diff = asyncio.run(_inspect(empty_url))
    assert "users" in tables
    assert diff == []


def test_alembic_check_command_passes(empty_url: str) -> None:
    config = alembic_config(empty_url)
    command.upgrade(config, "head")
    command.check(config)  # raises when the models and the migrations differ


def test_single_head() -> None:
    assert len(ScriptDirectory.from_config(alembic_config()).get_heads()) == 1


def test_0005_normalises_emails_and_claims_identifiers_reporting_clashes(
    empty_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Rows from before 0005: emails become NFC (a clash is reported and left alone), the
    login identifiers are claimed (a username equal to another's email is reported and
    gets no claim), Django-hashed rows are marked imported."""
    config = alembic_config(empty_url)
    config.attributes["configure_logger"] = False  # keep the records for caplog
    command.upgrade(config, "0004")
    rows = [
        (1, "ana", "a\u0301na@example.com", "pbkdf2_sha256$1000000$salt$hash"),
        (2, "ana2", "\u00e1na@example.com", "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"),
        (3, "bea", "be\u0301a@example.com", "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"),
        (4, "Cid@Example.com", "cid@example.org", "bcrypt_sha256$$2b$12$abc"),
        (5, "cid", "cid@example.com", "!unusable"),
    ]
    asyncio.run(_execute(empty_url, rows))
    with caplog.at_level("WARNING", logger="alembic.runtime.migration"):
        command.upgrade(config, "head")
    emails, imported, claims = asyncio.run(_read_0005(empty_url))
    assert emails == {
        1: "a\u0301na@example.com",  # equal to user 2's once normalised: left, reported
        2: "\u00e1na@example.com",
        3: "b\u00e9a@example.com",
        4: "cid@example.org",
        5: "cid@example.com",
    }
    assert imported == {1: True, 2: False, 3: False, 4: True, 5: True}
    # user 1's email is user 2's identifier; user 4's username is user 5's email
    assert claims == {2: 1, 3: 1, 4: 1, 5: 1}
    # the account left un-normalised keeps working: it can be renamed
    asyncio.run(_rename(empty_url, 1, "ana-renamed"))
    messages = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert messages == [
        "user 1: email equals user 2's once normalised (NFC); left as it is",
        "user 1: email is also user 2's login identifier; that identifier stays with user 2 "
        "(rename one of them)",
        "user 4: username is also user 5's login identifier; that identifier stays with "
        "user 5 (rename one of them)",
    ]


async def _rename(url: str, user_id: int, username: str) -> None:
    from app.core.db import create_sessionmaker
    from app.models import User
    from app.services.account import apply_changes

    engine = create_async_engine(url)
    try:
        async with create_sessionmaker(engine)() as db, db.begin():
            user = await db.get(User, user_id)
            assert user is not None
            await apply_changes(db, user, {"username": username})
    finally:
        await engine.dispose()


def test_0005_downgrade_keeps_sqlite_ids_from_being_reused(tmp_path: Path) -> None:
    with new_database("sqlite", tmp_path) as url:
        config = alembic_config(url)
        command.upgrade(config, "head")
        command.downgrade(config, "0004")
        assert "AUTOINCREMENT" in asyncio.run(_users_sql(url))
        command.upgrade(config, "head")
        assert "AUTOINCREMENT" in asyncio.run(_users_sql(url))


async def _users_sql(url: str) -> str:
    from sqlalchemy import text

    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            sql = await connection.scalar(
                text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'users'")
            )
    finally:
        await engine.dispose()
    return str(sql)


async def _execute(url: str, rows: list[tuple[int, str, str, str]]) -> None:
    from sqlalchemy import text

    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            for user_id, username, email, password in rows:
                await connection.execute(
                    text(
                        "INSERT INTO users (id, username, email, password, date_joined) "
                        "VALUES (:id, :username, :email, :password, CURRENT_TIMESTAMP)"
                    ),
                    {
                        "id": user_id,
                        "username": username,
                        "email": email,
                        "password": password,
                    },
                )
    finally:
        await engine.dispose()


async def _read_0005(url: str) -> tuple[dict[int, str], dict[int, bool], dict[int, int]]:
    from sqlalchemy import text

    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            users = (await connection.execute(text("SELECT id, email, imported FROM users"))).all()
            claims = (
                await connection.execute(
                    text("SELECT user_id, count(*) FROM login_identifiers GROUP BY user_id")
                )
            ).all()
    finally:
        await engine.dispose()
    return (
        {row[0]: row[1] for row in users},
        {row[0]: bool(row[2]) for row in users},
        {row[0]: row[1] for row in claims},
    )


# `python -m app migrate`, except that the process first imports what it needs, says
# "ready" and waits for a line on stdin: released together, two of them reach the database
# within a millisecond of each other instead of a Python start-up apart.
_MIGRATE_ON_SIGNAL = """
import sys
import alembic.command, app.models, asyncpg, sqlalchemy.ext.asyncio
from app.cli import main
print("ready", flush=True)
sys.stdin.readline()
sys.exit(main(["migrate"]))
"""


def migrate_together(database_url: str, workdir: Path, count: int = 2) -> list[tuple[int, str]]:
    """Start ``count`` migrate processes on ``database_url`` at the same moment; their exit
    codes and output."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _MIGRATE_ON_SIGNAL],
            cwd=workdir,
            env=server_env(database_url),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(count)
    ]
    try:
        for process in processes:
            assert process.stdout is not None
            ready = process.stdout.readline()
            assert ready == "ready\n", ready + process.communicate(timeout=30)[0]
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        return [
            (process.returncode, output)
            for process, output in ((p, p.communicate(timeout=120)[0]) for p in processes)
        ]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.mark.slow
def test_replicas_starting_together_migrate_one_at_a_time(tmp_path: Path) -> None:
    """Two `migrate` processes on a new PostgreSQL database at the same moment, three times:
    under the advisory lock both succeed (the second finds the schema at head) and the
    migrations are committed. Without it one of them fails creating the same tables."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    for _ in range(3):
        with new_database("postgresql", tmp_path) as url:
            outcomes = migrate_together(url, tmp_path)
            assert [code for code, _ in outcomes] == [0, 0], "\n".join(o for _, o in outcomes)
            tables, diff, revision = asyncio.run(_inspect_with_revision(url))
        assert revision == head
        assert "users" in tables
        assert diff == []
