"""The per-request session: commit or roll back, and the callbacks that follow the outcome;
SQL errors without their parameters."""

from __future__ import annotations

import asyncio
import contextlib
import traceback
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from app.core.config import DatabaseSettings
from app.core.db import after_commit, after_rollback, create_engine
from app.core.errors import AppError, RefreshTokenReused, UserNotFound
from app.core.logging import database_error_facts
from app.dependencies import SessionDep
from app.resources import resources_of
from tests.conftest import asgi_client, is_postgres, new_database


@pytest.mark.parametrize(
    ("error", "status", "outcome"),
    [
        (None, 200, "committed"),
        (UserNotFound(), 404, "rolled back"),  # an error the API answers on purpose
        (RuntimeError("bug"), 500, "rolled back"),
        (RefreshTokenReused(), 401, "committed"),  # keeps its changes although it fails
    ],
)
async def test_callbacks_follow_the_transaction_outcome(
    fresh_app: FastAPI, error: Exception | None, status: int, outcome: str
) -> None:
    outcomes: list[str] = []

    async def committed() -> None:
        outcomes.append("committed")

    async def rolled_back() -> None:
        outcomes.append("rolled back")

    async def handler(db: SessionDep) -> dict[str, str]:
        after_commit(db, committed)
        after_rollback(db, rolled_back)
        if error is not None:
            raise error
        return {}

    fresh_app.add_api_route("/test-session", handler)
    async with asgi_client(fresh_app) as client:
        response = await client.get("/test-session")
    assert response.status_code == status
    assert outcomes == [outcome]
    if isinstance(error, AppError):
        assert response.json()["code"] == error.code


async def test_sql_errors_do_not_carry_the_statement_parameters(app: FastAPI) -> None:
    """hide_parameters on both backends: the error's text names the statement, not the values."""
    secret = "pbkdf2_sha256$600000$salt$not-to-be-logged="
    insert = text(
        "INSERT INTO users (username, password, email, date_joined) "
        "VALUES ('alice', :password, 'alice@example.com', CURRENT_TIMESTAMP)"
    )
    async with resources_of(app).engine.begin() as connection:
        await connection.execute(insert, {"password": secret})
    with pytest.raises(IntegrityError) as caught:  # the same username again
        async with resources_of(app).engine.begin() as connection:
            await connection.execute(insert, {"password": secret})
    assert "INSERT INTO users" in str(caught.value)
    assert secret not in str(caught.value)
    assert secret not in "".join(traceback.format_exception(caught.value))
    # what the import prints of such an error: named, never quoted
    facts = database_error_facts(caught.value)
    assert facts.startswith("IntegrityError")
    assert "constraint_name=uq_users_" in facts or "SQLITE_CONSTRAINT_UNIQUE" in facts
    assert secret not in facts


async def test_the_id_counter_never_moves_back(app: FastAPI) -> None:
    """move_id_counter_past (the Django import's): past the floor, never backwards, also
    when the counter was set and no id handed out since (PostgreSQL's setval(..., false))."""
    from app.repositories import user_import

    for floor in (1000, 10):
        async with resources_of(app).sessionmaker() as db, db.begin():
            await user_import.move_id_counter_past(db, floor)
    async with resources_of(app).engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO users (username, password, email, date_joined) "
                "VALUES ('n', '!', 'n@example.com', CURRENT_TIMESTAMP)"
            )
        )
        new_id = await connection.scalar(text("SELECT MAX(id) FROM users"))
    assert new_id == 1001


async def test_a_deadlock_victim_gets_a_503_to_retry_not_a_500(
    fresh_app: FastAPI, database_url: str
) -> None:
    """Two requests lock two rows in opposite orders: on PostgreSQL one of them is the
    deadlock's victim, answered 503 + Retry-After (nothing written; send it again); on
    SQLite writers queue and both succeed."""
    async with resources_of(fresh_app).sessionmaker() as db, db.begin():
        await db.execute(text("CREATE TABLE IF NOT EXISTS deadlock_probe (id INTEGER PRIMARY KEY)"))
        await db.execute(text("DELETE FROM deadlock_probe"))
        await db.execute(text("INSERT INTO deadlock_probe (id) VALUES (1), (2)"))
    both_hold_one = asyncio.Barrier(2)

    async def lock_in_order(first: int, db: SessionDep) -> dict[str, str]:
        update = text("UPDATE deadlock_probe SET id = id WHERE id = :id")
        await db.execute(update, {"id": first})
        # On SQLite the other request waits for this one's commit: the barrier times out.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(both_hold_one.wait(), timeout=2)
        await db.execute(update, {"id": 3 - first})
        return {}

    fresh_app.add_api_route("/test-deadlock/{first}", lock_in_order)
    try:
        async with asgi_client(fresh_app) as client:
            answers = await asyncio.gather(
                client.get("/test-deadlock/1"), client.get("/test-deadlock/2")
            )
    finally:
        async with resources_of(fresh_app).sessionmaker() as db, db.begin():
            await db.execute(text("DROP TABLE deadlock_probe"))
    statuses = sorted(answer.status_code for answer in answers)
    if is_postgres(database_url):
        assert statuses == [200, 503], [answer.text for answer in answers]
        refused = next(answer for answer in answers if answer.status_code == 503)
        assert refused.json()["code"] == "service_unavailable"
        assert refused.headers["Retry-After"]
    else:
        assert statuses == [200, 200]


@pytest.fixture
def postgres_url(tmp_path: Path) -> Iterator[str]:
    with new_database("postgresql", tmp_path) as url:
        yield url


async def test_the_pre_ping_is_one_round_trip_and_replaces_a_dead_connection(
    postgres_url: str,
) -> None:
    """Every checkout of the ORM's pool (every write request) is pinged with one statement, no
    BEGIN/ROLLBACK around it; a pooled connection whose server went away fails that ping
    and is replaced, so the request that takes it next works."""
    engine = create_engine(DatabaseSettings(_env_file=None, database_url=postgres_url))
    try:
        async with engine.connect() as connection:
            before = await connection.scalar(text("SELECT pg_backend_pid()"))
            driver = (await connection.get_raw_connection()).driver_connection
            assert driver is not None
        statements: list[str] = []
        driver.add_query_logger(lambda record: statements.append(record.query))
        async with engine.connect() as connection:  # the same pooled connection, pinged
            assert await connection.scalar(text("SELECT pg_backend_pid()")) == before
        assert statements[0] == "SELECT 1", statements  # SQLAlchemy's own: BEGIN; ; ROLLBACK

        admin = await asyncpg.connect(postgres_url.replace("postgresql+asyncpg", "postgresql", 1))
        try:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", before)
        finally:
            await admin.close()
        await asyncio.sleep(0.2)  # the client sees the socket close
        async with engine.connect() as connection:
            after = await connection.scalar(text("SELECT pg_backend_pid()"))
        assert after != before
    finally:
        await engine.dispose()
