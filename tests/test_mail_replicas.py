"""Two server processes (replicas) deliver one outbox: every message exactly once. And the
send-test-email command as a process: its exit code."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import ExitStack, asynccontextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import DatabaseSettings
from app.core.db import create_engine, create_sessionmaker
from app.mail.messages import MailKind
from app.mail.relay import BATCH_SIZE
from app.models import OutboxEmail
from app.services import mail
from tests.conftest import TEST_SECRET_KEY, run_server, server_env
from tests.smtp_server import smtp_server_running

# Real servers, processes or fuzzing: `make test-fast` leaves these out.
pytestmark = pytest.mark.slow

MESSAGES = 5 * BATCH_SIZE


def wait_until(check: Callable[[], bool], what: str, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {within} s: {what}")
        time.sleep(0.05)


@asynccontextmanager
async def engine_for(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(DatabaseSettings(_env_file=None, database_url=database_url))
    try:
        yield engine
    finally:
        await engine.dispose()


async def _enqueue(database_url: str, count: int) -> list[int]:
    async with (
        engine_for(database_url) as engine,
        create_sessionmaker(engine)() as db,
        db.begin(),
    ):
        rows = [
            mail.enqueue(db, kind=MailKind.TEST, to=f"user{n}@example.com") for n in range(count)
        ]
        await db.flush()
        return [row.id for row in rows]


async def _statuses(database_url: str) -> set[str]:
    async with engine_for(database_url) as engine, engine.connect() as connection:
        return set((await connection.scalars(select(OutboxEmail.status))).all())


async def _empty(database_url: str) -> None:
    async with engine_for(database_url) as engine, engine.begin() as connection:
        await connection.execute(delete(OutboxEmail))


def _sent_by(base_url: str) -> float:
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "userservice_emails_total"
        and sample.labels == {"kind": "test", "outcome": "sent"}
    )


def test_two_replicas_never_send_one_email_twice(database_url: str, tmp_path: Path) -> None:
    """The mail server holds every message until both replicas are sending at once (more
    sessions in DATA than one relay's batch), so both take part; then every row must
    arrive once, and the two replicas' counts add up to the rows."""
    asyncio.run(_empty(database_url))
    gate = threading.Event()
    try:
        with smtp_server_running(gate=gate) as server, ExitStack() as replicas:
            ids = asyncio.run(_enqueue(database_url, MESSAGES))
            env = {
                "EMAIL_BACKEND": "smtp",
                "SMTP_HOST": "127.0.0.1",
                "SMTP_PORT": str(server.port),
                "SMTP_SECURITY": "none",
                "SMTP_TIMEOUT": "60",
                "EMAIL_FROM": "noreply@example.com",
            }
            first = replicas.enter_context(run_server(database_url, tmp_path, **env))
            wait_until(lambda: server.sessions_in_data == BATCH_SIZE, "the first replica holds")
            second = replicas.enter_context(run_server(database_url, tmp_path, **env))
            wait_until(lambda: server.most_sessions_in_data > BATCH_SIZE, "both replicas sending")
            gate.set()
            wait_until(lambda: len(server.received) >= MESSAGES, "every message")
            wait_until(
                lambda: asyncio.run(_statuses(database_url)) == {"sent"},
                "every row marked sent",
            )
            counts = [_sent_by(first), _sent_by(second)]
        delivered = [
            int(match.group(1))
            for received in server.received
            if (match := re.search(r"outbox\.(\d+)@", received.message["Message-ID"]))
        ]
        assert sorted(delivered) == sorted(ids)  # each row once, none twice
        assert sorted(rcpt for r in server.received for rcpt in r.rcpt_tos) == sorted(
            f"user{n}@example.com" for n in range(MESSAGES)
        )
        assert sum(counts) == MESSAGES
        assert min(counts) > 0
    finally:
        asyncio.run(_empty(database_url))


def test_send_test_email_command_exit_codes(tmp_path: Path) -> None:
    def run(**env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "app", "send-test-email", "--to", "ops@example.com"],
            cwd=tmp_path,
            env=server_env(f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}", **env),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    with smtp_server_running() as server:
        smtp = {
            "EMAIL_BACKEND": "smtp",
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(server.port),
            "SMTP_SECURITY": "none",
            "EMAIL_FROM": "noreply@example.com",
        }
        accepted = run(**smtp)
        assert accepted.returncode == 0, accepted.stderr
        assert "sent to ops@example.com" in accepted.stdout
        [received] = server.received
        assert received.rcpt_tos == ["ops@example.com"]
        server.rcpt_reply = "550 5.1.1 no such mailbox"
        refused = run(**smtp)
    assert refused.returncode == 1
    assert "550" in refused.stderr
    down = run(**smtp)  # the server is gone
    assert down.returncode == 1
    assert "not sent" in down.stderr
    assert "Traceback" not in down.stderr
    missing = run(ENVIRONMENT="production", SECRET_KEY=TEST_SECRET_KEY)
    assert missing.returncode == 2
    assert "EMAIL_BACKEND is required in production" in missing.stderr
