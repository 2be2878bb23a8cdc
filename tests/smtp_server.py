"""A real SMTP server in the test process (aiosmtpd, in its own thread, on a loopback port)
and the fixtures of the email tests: the outbox tables emptied, settings for a backend, a
clock the tests move, a self-signed certificate for STARTTLS and TLS.

Test modules load the fixtures with ``pytest_plugins = ["tests.smtp_server"]`` and import
the helpers; asserts here are plain (PYTEST_DONT_REWRITE: the test modules import this
module before pytest loads it as a plugin, too late to rewrite it).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any, Literal

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.core.config import Settings
from app.core.db import create_engine, create_sessionmaker
from app.models import OutboxEmail
from app.models.base import utcnow
from tests.conftest import free_port

SMTP_USER = "relay-user"
SMTP_PASSWORD = "relay-password-123"
Security = Literal["none", "starttls", "tls"]


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    authenticated_as: str | None

    @property
    def text(self) -> str:
        return self._part("plain")

    @property
    def html(self) -> str:
        return self._part("html")

    def _part(self, subtype: str) -> str:
        part = self.message.get_body(preferencelist=(subtype,))
        assert isinstance(part, EmailMessage)
        content = part.get_content()
        assert isinstance(content, str)
        return content


@dataclass
class SmtpServer:
    """aiosmtpd on 127.0.0.1:``port``: `start` and `stop` it (an outage), make it refuse
    (``rcpt_reply``, ``data_reply``, e.g. "451 4.3.0 try later") or hold every DATA until
    ``gate`` is set; what it accepted is in ``received``."""

    port: int
    security: Security = "none"
    tls_files: TlsFiles | None = None
    require_auth: bool = False
    rcpt_reply: str | None = None
    data_reply: str | None = None
    gate: threading.Event | None = None
    received: list[Received] = field(default_factory=list)
    sessions_in_data: int = 0
    most_sessions_in_data: int = 0
    _controller: Controller | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def running(self) -> bool:
        return self._controller is not None

    def start(self) -> None:
        assert self._controller is None
        kwargs: dict[str, Any] = {"hostname": "127.0.0.1", "port": self.port}
        if self.security != "none":
            assert self.tls_files is not None
            context = self.tls_files.server_context()
            if self.security == "tls":
                # aiosmtpd knows of TLS only through STARTTLS: AUTH over implicit TLS must
                # be allowed explicitly
                kwargs.update(ssl_context=context, auth_require_tls=False)
            else:
                kwargs.update(tls_context=context, require_starttls=True)
        if self.require_auth:
            # Under STARTTLS, AUTH is offered only once TLS is on (aiosmtpd's default).
            kwargs.update(authenticator=_authenticate, auth_required=self.security != "tls")
        self._controller = Controller(_Handler(self), **kwargs)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    async def wait_for(self, count: int, within: float = 30.0) -> list[Received]:
        """The first ``count`` messages, once they have arrived (fails after ``within`` s)."""
        deadline = time.monotonic() + within
        while len(self.received) < count:
            if time.monotonic() > deadline:
                pytest.fail(f"{len(self.received)} of {count} messages arrived in {within} s")
            await asyncio.sleep(0.02)
        return self.received[:count]


def _authenticate(
    _server: Any, _session: Any, _envelope: Any, _mechanism: str, auth_data: Any
) -> AuthResult:
    good = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == SMTP_USER.encode()
        and auth_data.password == SMTP_PASSWORD.encode()
    )
    return AuthResult(success=good, handled=False, auth_data=auth_data if good else None)


class _Handler:
    def __init__(self, server: SmtpServer) -> None:
        self._server = server

    async def handle_RCPT(
        self, _server: Any, _session: Any, envelope: Any, address: str, _options: Any
    ) -> str:
        if self._server.rcpt_reply:
            return self._server.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, _server: Any, session: Any, envelope: Any) -> str:
        server = self._server
        if server.data_reply:
            return server.data_reply
        with server._lock:
            server.sessions_in_data += 1
            server.most_sessions_in_data = max(
                server.most_sessions_in_data, server.sessions_in_data
            )
        try:
            deadline = time.monotonic() + 60
            while server.gate is not None and not server.gate.is_set():
                if time.monotonic() > deadline:
                    return "451 4.3.0 the test's gate never opened"
                await asyncio.sleep(0.01)
            message = BytesParser(policy=policy.default).parsebytes(envelope.content)
            assert isinstance(message, EmailMessage)
            auth = session.auth_data if session.authenticated else None
            server.received.append(
                Received(
                    mail_from=envelope.mail_from,
                    rcpt_tos=list(envelope.rcpt_tos),
                    message=message,
                    authenticated_as=auth.login.decode()
                    if isinstance(auth, LoginPassword)
                    else None,
                )
            )
        finally:
            with server._lock:
                server.sessions_in_data -= 1
        return "250 Message accepted for delivery"


@contextmanager
def smtp_server_running(
    security: Security = "none", tls_files: TlsFiles | None = None, **options: Any
) -> Iterator[SmtpServer]:
    server = SmtpServer(free_port(), security=security, tls_files=tls_files, **options)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    """A plain (no TLS) server, running."""
    with smtp_server_running() as server:
        yield server


@contextmanager
def black_hole() -> Iterator[int]:
    """A port that accepts connections and never answers (a mail server that hangs)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port: int = listener.getsockname()[1]
        yield port


# --- TLS -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    certificate: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.certificate, self.key)
        return context

    def client_context(self) -> ssl.SSLContext:
        """Trusts this certificate only (as a system trust store would trust a real one)."""
        return ssl.create_default_context(cafile=str(self.certificate))


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A self-signed certificate for 127.0.0.1 and localhost."""
    directory = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    files = TlsFiles(directory / "cert.pem", directory / "key.pem")
    files.certificate.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


# --- settings, database, clock ---------------------------------------------------------------


def mail_settings(base: Settings, **values: Any) -> Settings:
    """``base`` (the shared ``settings`` fixture) with the email settings given: smtp to
    127.0.0.1, no TLS, when ``smtp_port`` is."""
    if "smtp_port" in values:
        values = {
            "email_backend": "smtp",
            "smtp_host": "127.0.0.1",
            "smtp_security": "none",
            "email_from": "Userservice <noreply@example.com>",
            "smtp_timeout": 5,
            **values,
        }
    kept = base.model_dump(include=base.model_fields_set - set(values))
    return Settings(_env_file=None, **kept, **values)


@pytest.fixture
def smtp_settings(settings: Settings, smtp_server: SmtpServer) -> Settings:
    """Settings that send through ``smtp_server``."""
    return mail_settings(settings, smtp_port=smtp_server.port)


@dataclass(frozen=True)
class OutboxDatabase:
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]

    async def rows(self) -> list[OutboxEmail]:
        async with self.sessionmaker() as db:
            return list((await db.scalars(select(OutboxEmail).order_by(OutboxEmail.id))).all())

    async def row(self, row_id: int) -> OutboxEmail:
        async with self.sessionmaker() as db:
            row = await db.get(OutboxEmail, row_id)
            assert row is not None
            return row

    async def empty(self) -> None:
        async with self.sessionmaker() as db, db.begin():
            await db.execute(delete(OutboxEmail))


@pytest.fixture
async def outbox_db(settings: Settings) -> AsyncIterator[OutboxDatabase]:
    """The test database's engine, with the outbox emptied before and after (the shared
    fixtures empty only the users)."""
    engine = create_engine(settings)
    database = OutboxDatabase(engine, create_sessionmaker(engine))
    await database.empty()
    try:
        yield database
    finally:
        await database.empty()
        await engine.dispose()


async def eventually(check: Callable[[], Awaitable[bool]], what: str, within: float = 30.0) -> None:
    """Wait until ``check()`` is true (fails, naming ``what``, after ``within`` seconds)."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {within} s: {what}")
        await asyncio.sleep(0.02)


class FakeClock:
    """The relay's clock, moved by the test (retries without waiting)."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, delta: dt.timedelta) -> None:
        self.now += delta


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
