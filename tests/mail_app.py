"""Fixtures of the test modules whose app sends through a real SMTP server (password reset,
email verification): import them into the module, with ``pytest_plugins =
["tests.smtp_server"]``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import delete, func, select

from app.core.config import Settings
from app.models import OutboxEmail
from app.resources import resources_of
from tests.conftest import TEST_SECRET_KEY, asgi_client
from tests.smtp_server import SmtpServer, eventually, mail_settings, smtp_server_running


@pytest.fixture(scope="module")
def module_smtp() -> Iterator[SmtpServer]:
    with smtp_server_running() as server:
        yield server


@pytest.fixture(scope="module")
def app_settings(
    database_url: str, tmp_path_factory: pytest.TempPathFactory, module_smtp: SmtpServer
) -> Settings:
    """The module's app sends through a real SMTP server."""
    directory = tmp_path_factory.mktemp("app")
    base = Settings(
        _env_file=None,
        database_url=database_url,
        secret_key=TEST_SECRET_KEY,
        secret_key_file=directory / "unused-key",
        media_root=directory / "media",
    )
    return mail_settings(base, smtp_port=module_smtp.port)


@pytest.fixture
async def settled_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The module's client, each answer followed by the work its request left running
    (`AppResources.background`: the reset and resend lookups run detached from the
    request), so a test sees their rows. Use as the module's ``client``."""

    async def settle(_response: httpx.Response) -> None:
        await resources_of(app).background.drain()

    async with asgi_client(app) as client:
        client.event_hooks["response"].append(settle)
        yield client


async def outbox_settled(app: FastAPI) -> bool:
    async with resources_of(app).sessionmaker() as db:
        pending = await db.scalar(
            select(func.count()).select_from(OutboxEmail).where(OutboxEmail.status == "pending")
        )
    return pending == 0


@pytest.fixture
async def smtp(app: FastAPI, module_smtp: SmtpServer) -> SmtpServer:
    """The module's SMTP server with nothing received and the outbox empty."""
    await eventually(lambda: outbox_settled(app), "the outbox delivered")
    async with resources_of(app).sessionmaker() as db, db.begin():
        await db.execute(delete(OutboxEmail))
    module_smtp.received.clear()
    return module_smtp


def token_of(link: str) -> str:
    return parse_qs(urlsplit(link).query)["token"][0]
