"""`BackgroundWork`: detached from the caller, drained and closed by the lifespan."""

from __future__ import annotations

import asyncio
import logging

import pytest

from app.core.background import BackgroundWork


async def test_spawn_returns_before_the_work_ends_and_drain_waits_for_it() -> None:
    work = BackgroundWork()
    release = asyncio.Event()
    done: list[str] = []

    async def job(name: str) -> None:
        await release.wait()
        done.append(name)

    await work.spawn(job, "a")
    await work.spawn(job, name="b")
    assert done == []
    release.set()
    await work.drain()
    assert sorted(done) == ["a", "b"]


async def test_a_failure_is_logged_by_type_only(caplog: pytest.LogCaptureFixture) -> None:
    work = BackgroundWork()

    async def job() -> None:
        raise RuntimeError("alice@example.com is not here")

    with caplog.at_level(logging.ERROR, logger="app.background"):
        await work.spawn(job)
        await work.drain()
    assert [r.getMessage() for r in caplog.records] == ["background work failed: RuntimeError"]


async def test_the_limit_makes_the_caller_wait_for_a_slot() -> None:
    work = BackgroundWork(limit=1)
    release = asyncio.Event()

    async def job() -> None:
        await release.wait()

    await work.spawn(job)
    second = asyncio.create_task(work.spawn(job))
    await asyncio.sleep(0.05)
    assert not second.done()
    release.set()
    await second
    await work.drain()


async def test_close_cancels_what_outlives_the_grace() -> None:
    work = BackgroundWork(shutdown_grace=0.05)
    cancelled = asyncio.Event()

    async def job() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    await work.spawn(job)
    await work.aclose()
    assert cancelled.is_set()
