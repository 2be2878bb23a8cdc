"""DriverConnections, the profile's and refresh's connections to PostgreSQL: bounded, reused,
never reused after a failure, closed for good."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import asyncpg
import pytest

from app.core.errors import ServiceUnavailable
from app.repositories.driver import DriverConnections
from tests.conftest import new_database

BACKEND_PID = "SELECT pg_backend_pid() AS pid"


@pytest.fixture
def dsn(tmp_path: Path) -> Iterator[str]:
    with new_database("postgresql", tmp_path) as url:
        yield "postgresql://" + url.split("://", 1)[1]


def connections(
    dsn: str, size: int, wait_timeout: float = 5.0, max_idle: float = 300.0
) -> DriverConnections:
    return DriverConnections(partial(asyncpg.connect, dsn), size, wait_timeout, max_idle)


async def pid(reader: DriverConnections) -> int:
    row = await reader.fetchrow(BACKEND_PID)
    assert row is not None
    return int(row["pid"])


async def test_an_idle_connection_is_reused(dsn: str) -> None:
    reader = connections(dsn, size=4)
    try:
        assert len({await pid(reader) for _ in range(5)}) == 1
    finally:
        await reader.close()


async def test_at_most_size_connections_then_a_bounded_wait(dsn: str) -> None:
    reader = connections(dsn, size=2, wait_timeout=0.2)
    try:
        slow = [asyncio.create_task(reader.fetchrow("SELECT pg_sleep(1)")) for _ in range(2)]
        await asyncio.sleep(0.1)
        with pytest.raises(ServiceUnavailable):
            await reader.fetchrow("SELECT 1")
        await asyncio.gather(*slow)
        # Both slots free again, and both connections kept.
        pids = await asyncio.gather(
            *(reader.fetchrow("SELECT pg_backend_pid() AS pid, pg_sleep(0.2)") for _ in range(2))
        )
        assert len({row["pid"] for row in pids if row is not None}) == 2
        # A waiter gets the first slot that frees up.
        waited = connections(dsn, size=1, wait_timeout=5.0)
        try:
            first = asyncio.create_task(waited.fetchrow("SELECT pg_sleep(0.3)"))
            await asyncio.sleep(0.05)
            assert await waited.fetchrow("SELECT 7 AS seven") is not None
            await first
        finally:
            await waited.close()
    finally:
        await reader.close()


async def test_a_failed_query_closes_its_connection(dsn: str) -> None:
    reader = connections(dsn, size=1)
    try:
        before = await pid(reader)
        with pytest.raises(asyncpg.PostgresSyntaxError):
            await reader.fetchrow("SELEC 1")
        after = await pid(reader)
        assert after != before
    finally:
        await reader.close()


async def test_a_cancelled_query_closes_its_connection(dsn: str) -> None:
    reader = connections(dsn, size=1)
    try:
        before = await pid(reader)
        task = asyncio.create_task(reader.fetchrow("SELECT pg_sleep(5)"))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await pid(reader) != before
    finally:
        await reader.close()


async def test_a_connection_the_server_closed_is_dropped(dsn: str) -> None:
    reader = connections(dsn, size=1)
    try:
        before = await pid(reader)
        admin = await asyncpg.connect(dsn)
        try:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", before)
        finally:
            await admin.close()
        await asyncio.sleep(0.2)  # the client sees the socket close
        assert await pid(reader) != before
    finally:
        await reader.close()


async def test_closed_means_closed(dsn: str) -> None:
    reader = connections(dsn, size=2)
    await pid(reader)
    await reader.close()
    with pytest.raises(ServiceUnavailable):
        await reader.fetchrow("SELECT 1")


async def test_a_request_waiting_for_a_slot_when_closed_gets_503(dsn: str) -> None:
    reader = connections(dsn, size=1)
    busy = asyncio.create_task(reader.fetchrow("SELECT pg_sleep(0.3)"))
    await asyncio.sleep(0.1)
    waiting = asyncio.create_task(reader.fetchrow(BACKEND_PID))
    await asyncio.sleep(0.05)
    await reader.close()
    await busy
    with pytest.raises(ServiceUnavailable):
        await waiting


async def test_connections_idle_too_long_are_closed_by_the_next_request(dsn: str) -> None:
    reader = connections(dsn, size=3, max_idle=0.3)
    try:
        burst = await asyncio.gather(
            *(reader.fetchrow("SELECT pg_backend_pid() AS pid, pg_sleep(0.1)") for _ in range(3))
        )
        assert len({row["pid"] for row in burst if row is not None}) == 3
        await asyncio.sleep(0.5)
        # The next request takes the newest idle connection and closes the two others.
        newest = await pid(reader)
        admin = await asyncpg.connect(dsn)
        try:
            for _ in range(40):  # a terminated connection's backend exits a moment later
                backends = await admin.fetchval(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
                if backends == 1:
                    break
                await asyncio.sleep(0.05)
        finally:
            await admin.close()
        assert backends == 1
        assert await pid(reader) == newest
    finally:
        await reader.close()
