"""Database outages: 503 + Retry-After within a bounded time, /readyz 503, and recovery
without a restart once the database is back."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from app.core.config import Settings
from app.main import create_app
from tests.conftest import (
    PASSWORD,
    TEST_SECRET_KEY,
    asgi_client,
    bearer,
    free_port,
    new_database,
    run_server,
    user_payload,
)

# Real servers, processes or fuzzing: `make test-fast` leaves these out.
pytestmark = pytest.mark.slow

# Bounds asserted while the database is cut (the service runs with DB_CONNECT_TIMEOUT=2,
# READINESS_TIMEOUT=2): generous for a loaded 2-core machine, far below a hung request.
MAX_SECONDS_TO_503 = 15
MAX_SECONDS_TO_RECOVER = 30


class CuttableProxy:
    """A TCP proxy in a thread of its own. ``cut()`` drops every open connection and holds
    new ones open without forwarding a byte (a black hole: the worst case, where only
    timeouts help); ``restore()`` forwards again."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.connected = True
        self.writers: set[asyncio.StreamWriter] = set()
        self.started = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self.stop_event = asyncio.Event()
        server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.started.set()
        async with server:
            await self.stop_event.wait()
        for writer in list(self.writers):
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            if not self.connected:
                await reader.read()  # black hole: never answer, wait for the client to leave
                return
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
            self.writers.add(upstream_writer)
            try:
                await asyncio.gather(
                    self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer)
                )
            finally:
                self.writers.discard(upstream_writer)
                upstream_writer.close()
        except OSError:
            pass
        finally:
            self.writers.discard(writer)
            writer.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    def _cut(self) -> None:
        self.connected = False
        for writer in list(self.writers):
            writer.transport.abort()

    def cut(self) -> None:
        self.loop.call_soon_threadsafe(self._cut)

    def restore(self) -> None:
        self.loop.call_soon_threadsafe(setattr, self, "connected", True)

    @contextmanager
    def running(self) -> Iterator[CuttableProxy]:
        self.thread.start()
        self.started.wait(10)
        try:
            yield self
        finally:
            self.loop.call_soon_threadsafe(self.stop_event.set)
            self.thread.join(10)


def _through(url: str, port: int) -> str:
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


def _assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "service_unavailable"
    assert int(response.headers["Retry-After"]) >= 1


def _timed(call: object) -> tuple[httpx.Response, float]:
    assert callable(call)
    started = time.monotonic()
    response = call()
    assert isinstance(response, httpx.Response)
    return response, time.monotonic() - started


def test_database_cut_is_503_and_the_service_recovers(tmp_path: Path) -> None:
    with new_database("postgresql", tmp_path) as url:
        target = urlsplit(url)
        proxy = CuttableProxy(target.hostname or "127.0.0.1", target.port or 5432)
        with (
            proxy.running(),
            run_server(
                _through(url, proxy.port),
                tmp_path,
                DB_CONNECT_TIMEOUT="2",
                DB_POOL_TIMEOUT="3",
                READINESS_TIMEOUT="2",
            ) as base_url,
            httpx.Client(base_url=base_url, timeout=60) as client,
        ):
            assert client.post("/api/v1/auth/register", json=user_payload()).status_code == 201
            token = client.post(
                "/api/v1/auth/token", json={"username": "alice", "password": PASSWORD}
            ).json()["access_token"]
            assert client.get("/api/v1/users/profile", headers=bearer(token)).status_code == 200
            assert client.get("/readyz").status_code == 200

            proxy.cut()
            profile, profile_seconds = _timed(
                lambda: client.get("/api/v1/users/profile", headers=bearer(token))
            )
            _assert_unavailable(profile)
            assert profile_seconds < MAX_SECONDS_TO_503
            ready, ready_seconds = _timed(lambda: client.get("/readyz"))
            _assert_unavailable(ready)
            assert ready_seconds < MAX_SECONDS_TO_503
            bob = user_payload(username="bob", email="bob@example.com")
            _assert_unavailable(client.post("/api/v1/auth/register", json=bob))
            _assert_unavailable(
                client.post("/api/v1/auth/token", json={"username": "alice", "password": PASSWORD})
            )
            assert client.get("/healthz").status_code == 200  # alive, only not ready

            proxy.restore()
            restored = time.monotonic()
            while client.get("/api/v1/users/profile", headers=bearer(token)).status_code != 200:
                assert time.monotonic() - restored < MAX_SECONDS_TO_RECOVER, "no recovery"
                time.sleep(0.2)
            assert client.get("/readyz").status_code == 200
            # The registration refused while cut left nothing behind.
            assert client.post("/api/v1/auth/register", json=bob).status_code == 201
            print(
                f"\n503 while cut: profile {profile_seconds:.2f}s, readyz {ready_seconds:.2f}s; "
                f"recovered {time.monotonic() - restored:.2f}s after restore"
            )


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_unreachable_database_is_503_not_500(backend: str, tmp_path: Path) -> None:
    url = (
        f"sqlite+aiosqlite:///{tmp_path / 'missing-directory' / 'db.sqlite3'}"
        if backend == "sqlite"
        else f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/postgres"  # nothing listens
    )
    settings = Settings(
        _env_file=None, database_url=url, secret_key=TEST_SECRET_KEY, media_root=tmp_path
    )
    application = create_app(settings)
    async with application.router.lifespan_context(application), asgi_client(application) as client:
        _assert_unavailable(await client.get("/readyz"))
        _assert_unavailable(await client.post("/api/v1/auth/register", json=user_payload()))
        _assert_unavailable(
            await client.post("/api/v1/auth/token", json={"username": "a", "password": "b"})
        )
        assert (await client.get("/healthz")).status_code == 200


def test_request_in_flight_when_the_database_drops_is_503_and_writes_nothing(
    tmp_path: Path,
) -> None:
    """A profile update blocked inside its transaction (a row lock held by the test) when
    the connection is cut: 503, and the row is unchanged once the database is back."""
    import psycopg

    with new_database("postgresql", tmp_path) as url:
        target = urlsplit(url)
        proxy = CuttableProxy(target.hostname or "127.0.0.1", target.port or 5432)
        direct = url.replace("postgresql+asyncpg://", "postgresql://", 1)
        with (
            proxy.running(),
            run_server(
                _through(url, proxy.port), tmp_path, DB_CONNECT_TIMEOUT="2", DB_POOL_TIMEOUT="3"
            ) as base_url,
            httpx.Client(base_url=base_url, timeout=60) as client,
            ThreadPoolExecutor(max_workers=1) as background,
        ):
            assert client.post("/api/v1/auth/register", json=user_payload()).status_code == 201
            token = client.post(
                "/api/v1/auth/token", json={"username": "alice", "password": PASSWORD}
            ).json()["access_token"]
            with psycopg.connect(direct, autocommit=False) as locker:
                locker.execute("SELECT 1 FROM users WHERE username = 'alice' FOR UPDATE")
                in_flight = background.submit(
                    client.patch,
                    "/api/v1/users/profile",
                    json={"first_name": "Changed", "last_name": "Too"},
                    headers=bearer(token),
                )
                _wait_for_lock_wait(direct)  # the UPDATE is waiting on the row lock
                proxy.cut()
                response = in_flight.result(timeout=MAX_SECONDS_TO_503)
                locker.rollback()
            _assert_unavailable(response)
            proxy.restore()
            with psycopg.connect(direct) as check:
                row = check.execute(
                    "SELECT first_name, last_name FROM users WHERE username = 'alice'"
                ).fetchone()
            assert row == ("Alice", "Liddell")


def _wait_for_lock_wait(dsn: str) -> None:
    import psycopg

    deadline = time.monotonic() + MAX_SECONDS_TO_503
    with psycopg.connect(dsn, autocommit=True) as watcher:
        while time.monotonic() < deadline:
            waiting = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE wait_event_type = 'Lock' AND query ILIKE 'UPDATE users%'"
            ).fetchone()
            if waiting and waiting[0]:
                return
            time.sleep(0.05)
    pytest.fail("the update never waited on the row lock")
