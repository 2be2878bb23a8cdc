"""Every test that uses ``database_url`` runs on SQLite and on PostgreSQL.

PostgreSQL is the server at ``TEST_POSTGRES_URL`` (default: the local one); each test run
creates its own database there and builds the schema with ``alembic upgrade head``. When
PostgreSQL is unreachable its tests are skipped, unless ``USERSERVICE_REQUIRE_POSTGRES=1``
(CI), which turns that into a failure.

Fast by construction (the suite runs daily):

- ``app`` is one running app per test module and backend (``shared_app``), reset before
  each test: tables emptied, MEDIA_ROOT emptied, throttle counts dropped. Tests that need
  other settings build their own (``running_app(settings.model_copy(...))``); tests that
  change the app itself (add routes) take ``fresh_app``. Tests and async fixtures run in
  one event loop per module (``asyncio_default_*_loop_scope = "module"``), the app's.
- ``add_user`` writes a user as registration would, through the same request model and
  service function, with each password's argon2id hash computed once per session; HTTP
  registration is kept where registration is the subject. ``sign_in`` and
  ``access_token`` give the tokens of a successful login (a real session row, the app's
  TokenCodec) without argon2's verification; ``login`` (HTTP) is kept where login, its
  throttle or its metrics are the subject.
"""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
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
from app.core.security import PASSWORD_CONTEXT, PasswordHasher
from app.main import create_app
from app.models import User
from app.models.base import utcnow
from app.repositories import users as users_repo
from app.resources import resources_of
from app.schemas.auth import RegisterRequest
from app.schemas.user import UserRead
from app.services import auth as auth_service
from app.services import auth_sessions
from app.services.audit import Origin
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


@pytest.fixture(scope="module")
def app_settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The settings of the module's shared app. A module whose every test needs other
    settings overrides this fixture (``settings`` follows it)."""
    directory = tmp_path_factory.mktemp("app")
    return Settings(
        _env_file=None,
        database_url=database_url,
        secret_key=TEST_SECRET_KEY,
        secret_key_file=directory / "unused-key",
        media_root=directory / "media",
    )


@pytest.fixture
def settings(app_settings: Settings, tmp_path: Path) -> Settings:
    """The shared app's settings with the test's own MEDIA_ROOT: the base of the settings a
    test changes (``settings.model_copy(update=...)``) to build an app of its own."""
    return app_settings.model_copy(
        update={"secret_key_file": tmp_path / "unused-key", "media_root": tmp_path / "media"}
    )


async def _empty_tables(app: FastAPI) -> None:
    engine = resources_of(app).engine
    async with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            await connection.execute(text("TRUNCATE users, audit_events RESTART IDENTITY CASCADE"))
        else:
            await connection.execute(text("DELETE FROM users"))
            await connection.execute(text("DELETE FROM audit_events"))
            await connection.execute(
                text("DELETE FROM sqlite_sequence WHERE name IN ('users', 'audit_events')")
            )


async def _reset(app: FastAPI) -> None:
    """A running app as a test finds a new one: no rows, no media files, no throttle counts
    (the in-memory store the default settings use; the ids restart at 1)."""
    parts = resources_of(app)
    await _empty_tables(app)
    media_root = parts.settings.media_root
    if media_root.exists():
        for path in media_root.iterdir():
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    # Throttle keeps its limiter's storage private; the tests of the throttle reach it too.
    await parts.throttle._limiter.storage.reset()


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


@pytest.fixture(scope="module")
async def shared_app(app_settings: Settings) -> AsyncIterator[FastAPI]:
    """One running app per test module and backend; tests take it through ``app``."""
    application = create_app(app_settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def app(shared_app: FastAPI) -> FastAPI:
    """The module's running app, reset for this test (see ``_reset``)."""
    await _reset(shared_app)
    return shared_app


@pytest.fixture
async def fresh_app(settings: Settings) -> AsyncIterator[FastAPI]:
    """An app of the test's own, for tests that change the app (add routes to it)."""
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


class _HashOncePerPassword(PasswordHasher):
    """The app's hasher (PASSWORD_CONTEXT: argon2id with the app's parameters) computing
    each password's hash once per test session: a user then costs an INSERT, not 0.1 s of
    argon2. The hashes are real: logging in with the password verifies them."""

    def __init__(self) -> None:
        super().__init__(threads=1)

    async def hash(self, password: str) -> str:
        return _password_hash(password)


@functools.cache
def _password_hash(password: str) -> str:
    return str(PASSWORD_CONTEXT.hash(password))


@functools.cache
def _hasher() -> PasswordHasher:
    return _HashOncePerPassword()


FLAGS = frozenset({"is_active", "is_staff", "is_superuser"})


async def add_user(app: FastAPI, **overrides: Any) -> dict[str, Any]:
    """A user as ``POST /auth/register`` creates one: ``user_payload(**overrides)`` parsed
    by the endpoint's request model and written by its service function (password rules,
    identifiers checked and claimed), in one transaction of its own. ``is_active``,
    ``is_staff`` and ``is_superuser`` among ``overrides`` are set on the row, as an admin
    would. Returns what registration returns: the public fields.

    For tests where registration is not the subject (they keep ``register``)."""
    flags = {name: overrides.pop(name) for name in FLAGS & overrides.keys()}
    data = RegisterRequest.model_validate(user_payload(**overrides))
    async with resources_of(app).sessionmaker() as db, db.begin():
        user = await auth_service.register(db, _hasher(), data)
        for name, value in flags.items():
            setattr(user, name, value)
        await db.flush()
        body: dict[str, Any] = UserRead.model_validate(user).model_dump(mode="json")
    return body


async def sign_in(app: FastAPI, identifier: str = "alice") -> dict[str, str]:
    """``access_token`` and ``refresh_token`` as a successful login returns them: the steps
    of ``services.auth.login`` after the password check (``last_login``, then a session
    row and its tokens from ``services.auth_sessions.start`` with the app's TokenCodec), without
    argon2's verification or the throttle's count. For tests where login is not the
    subject (they keep ``login``)."""
    parts = resources_of(app)
    async with parts.sessionmaker() as db, db.begin():
        user = await users_repo.get_by_login(db, identifier)
        assert user is not None, identifier
        assert user.is_active, identifier
        user.last_login = utcnow()
        await db.flush()
        pair = await auth_sessions.start(
            db, parts.token_codec, user, Origin.of("127.0.0.1", "python-httpx", None)
        )
    return {"access_token": pair.access.token, "refresh_token": pair.refresh.token}


async def access_token(app: FastAPI, identifier: str = "alice") -> str:
    """The access token of ``sign_in``."""
    return (await sign_in(app, identifier))["access_token"]


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
    root = resources_of(app).settings.media_root
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
    async with resources_of(app).sessionmaker() as db, db.begin():
        await db.execute(update(User).where(User.username == username).values(**values))
