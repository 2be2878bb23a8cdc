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
