"""Migrations build the schema on both backends, reverse cleanly and match the models."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, inspect
from sqlalchemy.ext.asyncio import create_async_engine

from alembic import command
from app.cli import alembic_config
from app.models import Base
from app.models.migration_only import include_object
from tests.conftest import new_database


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


async def _inspect(url: str) -> tuple[set[str], list[object]]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            tables = await connection.run_sync(_tables)
            diff = await connection.run_sync(_diff)
    finally:
        await engine.dispose()
    return tables, diff


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
    from alembic.script import ScriptDirectory

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
    messages = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert messages == [
        "user 1: email equals user 2's once normalised (NFC); left as it is",
        "user 1: email is also user 2's login identifier; that identifier stays with user 2 "
        "(rename one of them)",
        "user 4: username is also user 5's login identifier; that identifier stays with "
        "user 5 (rename one of them)",
    ]


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
