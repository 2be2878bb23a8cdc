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
