"""Every test that uses ``database_url`` runs on SQLite and on PostgreSQL.

PostgreSQL is the server at ``TEST_POSTGRES_URL`` (default: the local one); each test run
creates its own database there and builds the schema with ``alembic upgrade head``. When
PostgreSQL is unreachable its tests are skipped, unless ``USERSERVICE_REQUIRE_POSTGRES=1``
(CI), which turns that into a failure.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text, update

from app.cli import migrate
from app.core.config import Settings
from app.main import create_app
from app.models import User
from app.resources import resources_of
from bench import server as bench_server
from bench.server import free_port as free_port  # test modules import it from here

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REQUIRE_REDIS = os.environ.get("USERSERVICE_REQUIRE_REDIS") == "1"
PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REQUIRE_POSTGRES = os.environ.get("USERSERVICE_REQUIRE_POSTGRES") == "1"
TEST_SECRET_KEY = "test-secret-key-that-is-long-enough-0123456789"
PASSWORD = "a-Strong-passphrase-17"


async def _pg_admin(statement: str) -> None:
    connection = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def _asyncpg_url(database: str) -> str:
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    return base.replace("postgresql://", "postgresql+asyncpg://", 1) + "/" + database


@contextmanager
def new_database(backend: str, directory: Path) -> Iterator[str]:
    """An empty database of ``backend``, dropped afterwards.

    Skips, or fails under USERSERVICE_REQUIRE_POSTGRES=1, when PostgreSQL is down.
    """
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{directory / f'{uuid.uuid4().hex}.db'}"
        return
    name = f"userservice_test_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        message = f"PostgreSQL at {PG_ADMIN_URL} is not usable: {exc!r}"
        if REQUIRE_POSTGRES:
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield _asyncpg_url(name)
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A migrated database of each backend, shared by the session (tables emptied per test)."""
    with new_database(request.param, tmp_path_factory.mktemp("db")) as url:
        migrate(url)
        yield url


def is_postgres(url: str) -> bool:
    return url.startswith("postgresql")


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        _env_file=None,
        database_url=database_url,
        secret_key=TEST_SECRET_KEY,
        secret_key_file=tmp_path / "unused-key",
        media_root=tmp_path / "media",
    )


async def _empty_tables(app: FastAPI) -> None:
    async with resources_of(app).engine.begin() as connection:
        if resources_of(app).engine.dialect.name == "postgresql":
            await connection.execute(text("TRUNCATE users RESTART IDENTITY CASCADE"))
        else:
            await connection.execute(text("DELETE FROM users"))
            await connection.execute(text("DELETE FROM sqlite_sequence WHERE name = 'users'"))


@asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[FastAPI]:
    """An app with its lifespan entered and its tables emptied."""
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        await _empty_tables(application)
        yield application


@asynccontextmanager
async def asgi_client(
    app: FastAPI, client_ip: str = "127.0.0.1"
) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, client=(client_ip, 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    async with running_app(settings) as application:
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(app) as client:
        yield client


def user_payload(**overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "username": "alice",
        "email": "alice@example.com",
        "password": PASSWORD,
        "first_name": "Alice",
        "last_name": "Liddell",
        "number_phone": "5551234567",
    }
    payload.update(overrides)
    return payload


async def register(client: httpx.AsyncClient, **overrides: Any) -> dict[str, Any]:
    response = await client.post("/api/v1/auth/register", json=user_payload(**overrides))
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def login(
    client: httpx.AsyncClient, username: str = "alice", password: str = PASSWORD
) -> str:
    response = await client.post(
        "/api/v1/auth/token", json={"username": username, "password": password}
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def server_env(database_url: str, **extra: str) -> dict[str, str]:
    return bench_server.server_env(database_url, TEST_SECRET_KEY, **extra)


@contextmanager
def run_server(
    database_url: str, workdir: Path, workers: int | str = 1, **env: str
) -> Iterator[str]:
    """``python -m app serve --workers N`` (migrations, then uvicorn) on a free port; yields
    its URL. ``env`` adds environment variables; the output goes to ``workdir/server-PORT.log``.
    """
    try:
        server = bench_server.Server.start(
            server_env(database_url, **env), workdir, workers=workers
        )
    except bench_server.ServerError as exc:
        pytest.fail(str(exc))
    with server:
        yield server.url


async def db_rows(app: FastAPI) -> list[dict[str, Any]]:
    """Every users row, every column: compared before and after a refused request."""
    async with resources_of(app).engine.connect() as connection:
        result = await connection.execute(text("SELECT * FROM users ORDER BY id"))
        return [dict(row._mapping) for row in result]


def media_files(app: FastAPI) -> dict[str, bytes]:
    """Every file under MEDIA_ROOT (temporary ones included) with its content."""
    root: Path = resources_of(app).settings.media_root
    if not root.exists():
        return {}
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


async def state(app: FastAPI) -> tuple[list[dict[str, Any]], dict[str, bytes]]:
    return await db_rows(app), media_files(app)


async def set_columns(app: FastAPI, username: str = "alice", **values: object) -> None:
    """Write columns of one user straight to the database (flags, a legacy hash, ...)."""
    async with resources_of(app).sessionmaker() as session, session.begin():
        await session.execute(update(User).where(User.username == username).values(**values))
