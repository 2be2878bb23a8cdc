"""The outbox relay against a real SMTP server (aiosmtpd in this process): delivery on
each backend, outages, restarts, the retry schedule, giving up, the token erased, metrics.
Time is moved with a fake clock, never waited for."""

from __future__ import annotations

import asyncio
import email
import logging
import stat
import threading
from datetime import timedelta
from email import policy
from pathlib import Path

import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY

from app.core.config import Settings
from app.core.db import create_engine, create_sessionmaker
from app.dependencies import SessionDep
from app.mail.messages import MailKind
from app.mail.relay import BATCH_SIZE, LEASE, EmailRelay
from app.mail.senders import Sender, SmtpSender, create_sender
from app.repositories import outbox
from app.resources import resources_of
from app.services import mail
from tests.conftest import asgi_client, free_port, running_app
from tests.smtp_server import (
    SMTP_PASSWORD,
    SMTP_USER,
    FakeClock,
    OutboxDatabase,
    Security,
    SmtpServer,
    TlsFiles,
    black_hole,
    eventually,
    mail_settings,
    smtp_server_running,
)

pytest_plugins = ["tests.smtp_server"]

TOKEN = "Rk9PQkFSLXRva2VuLXRoYXQtbXVzdC1uZXZlci1iZS1sb2dnZWQ"
LINK = f"http://127.0.0.1:8000/account/reset-password?token={TOKEN}"
CONTEXT = {"username": "bob", "valid_for": "1 hour"}
RECIPIENT = "bob@example.com"


def emails_counted(kind: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "userservice_emails_total", {"kind": kind, "outcome": outcome}
    )
    return value or 0.0


def service_log(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What the service logged (not the test's SMTP server, "mail.log")."""
    return [record.getMessage() for record in caplog.records if record.name != "mail.log"]


def backlog_gauge() -> float | None:
    return REGISTRY.get_sample_value("userservice_email_outbox_backlog")


async def enqueue_reset(outbox_db: OutboxDatabase, clock: FakeClock | None = None) -> int:
    async with outbox_db.sessionmaker() as db, db.begin():
        row = mail.enqueue(
            db,
            kind=MailKind.PASSWORD_RESET,
            to=RECIPIENT,
            context=CONTEXT,
            secret={"link": LINK},
            now=clock() if clock else None,
        )
        await db.flush()
        return row.id


def relay_for(
    settings: Settings, outbox_db: OutboxDatabase, clock: FakeClock, sender: Sender | None = None
) -> EmailRelay:
    return EmailRelay(
        settings, outbox_db.sessionmaker, sender or create_sender(settings), clock=clock
    )


def add_reset_route(app: FastAPI) -> None:
    """A route standing for the later reset endpoint: it enqueues in the request's
    transaction, the session dependency commits and wakes the relay."""

    async def request_reset(db: SessionDep) -> None:
        mail.enqueue(
            db, kind=MailKind.PASSWORD_RESET, to=RECIPIENT, context=CONTEXT, secret={"link": LINK}
        )

    app.add_api_route("/test/request-reset", request_reset, methods=["POST"], status_code=204)


async def test_smtp_delivers_a_multipart_message_then_erases_the_token(
    smtp_settings: Settings,
    outbox_db: OutboxDatabase,
    smtp_server: SmtpServer,
    clock: FakeClock,
) -> None:
    sent_before = emails_counted("password_reset", "sent")
    row_id = await enqueue_reset(outbox_db, clock)

    await relay_for(smtp_settings, outbox_db, clock).run_once()

    [received] = await smtp_server.wait_for(1)
    assert received.mail_from == "noreply@example.com"
    assert received.rcpt_tos == [RECIPIENT]
    assert received.message["To"] == RECIPIENT
    assert received.message["Subject"] == "userservice: reset your password"
    assert received.message.get_content_type() == "multipart/alternative"
    assert LINK in received.text
    assert f'href="{LINK}"' in received.html
    assert f"outbox.{row_id}" in received.message["Message-ID"]

    row = await outbox_db.row(row_id)
    assert (row.status, row.attempts, row.recipient, row.kind) == (
        "sent",
        1,
        RECIPIENT,
        "password_reset",
    )
    assert row.secret is None  # the link and its token are gone
    assert row.context == CONTEXT
    assert row.sent_at == clock.now
    assert row.next_attempt_at is None
    assert row.last_error is None
    assert TOKEN not in repr(row)
    assert emails_counted("password_reset", "sent") == sent_before + 1
    assert backlog_gauge() == 0


@pytest.mark.parametrize("security", ["starttls", "tls"])
async def test_smtp_over_tls_with_authentication(
    security: Security,
    settings: Settings,
    outbox_db: OutboxDatabase,
    tls_files: TlsFiles,
    clock: FakeClock,
) -> None:
    with smtp_server_running(security, tls_files, require_auth=True) as server:
        settings = mail_settings(
            settings,
            smtp_port=server.port,
            smtp_security=security,
            smtp_username=SMTP_USER,
            smtp_password=SMTP_PASSWORD,
        )
        sender = SmtpSender(settings, tls_context=tls_files.client_context())
        row_id = await enqueue_reset(outbox_db, clock)
        await relay_for(settings, outbox_db, clock, sender).run_once()
        [received] = await server.wait_for(1)
    assert received.authenticated_as == SMTP_USER
    assert LINK in received.text
    assert (await outbox_db.row(row_id)).status == "sent"


@pytest.mark.parametrize(
    ("server_security", "client_security", "error"),
    [
        ("none", "starttls", "STARTTLS"),  # never a silent downgrade to plain text
        ("tls", "tls", "CERTIFICATE_VERIFY_FAILED"),  # self-signed, not trusted
    ],
)
async def test_tls_is_required_and_certificates_checked(
    server_security: Security,
    client_security: Security,
    error: str,
    settings: Settings,
    outbox_db: OutboxDatabase,
    tls_files: TlsFiles,
    clock: FakeClock,
) -> None:
    with smtp_server_running(server_security, tls_files) as server:
        settings = mail_settings(settings, smtp_port=server.port, smtp_security=client_security)
        row_id = await enqueue_reset(outbox_db, clock)
        await relay_for(settings, outbox_db, clock).run_once()  # the system's trust store
        assert server.received == []
    row = await outbox_db.row(row_id)
    assert (row.status, row.attempts) == ("pending", 1)
    assert row.last_error is not None
    assert error in row.last_error


async def test_console_backend_prints_the_message_with_its_link(
    settings: Settings,
    outbox_db: OutboxDatabase,
    clock: FakeClock,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert settings.mail_backend == "console"  # the development default
    row_id = await enqueue_reset(outbox_db, clock)
    await relay_for(settings, outbox_db, clock).run_once()
    printed = capsys.readouterr().err
    assert f"To: {RECIPIENT}" in printed
    assert "Subject: userservice: reset your password" in printed
    assert LINK in printed  # whole, not quoted-printable
    row = await outbox_db.row(row_id)
    assert (row.status, row.secret) == ("sent", None)


async def test_file_backend_writes_one_private_eml_per_message(
    settings: Settings, outbox_db: OutboxDatabase, clock: FakeClock, tmp_path: Path
) -> None:
    directory = tmp_path / "outgoing"
    settings = mail_settings(settings, email_backend="file", email_file_dir=directory)
    ids = [await enqueue_reset(outbox_db, clock) for _ in range(2)]
    await relay_for(settings, outbox_db, clock).run_once()
    files = sorted(directory.iterdir())
    assert [path.suffix for path in files] == [".eml", ".eml"]  # no temporary file left
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    ids_seen = set()
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        message = email.message_from_bytes(path.read_bytes(), policy=policy.default)
        assert isinstance(message, email.message.EmailMessage)
        assert message["To"] == RECIPIENT
        body = message.get_body(preferencelist=("plain",))
        assert body is not None
        assert LINK in body.get_content()
        ids_seen.add(message["Message-ID"])
    assert len(ids_seen) == 2
    assert [(await outbox_db.row(row_id)).status for row_id in ids] == ["sent", "sent"]


async def test_off_backend_discards_and_erases(
    settings: Settings, outbox_db: OutboxDatabase, clock: FakeClock
) -> None:
    settings = mail_settings(settings, email_backend="off")
    discarded_before = emails_counted("password_reset", "discarded")
    row_id = await enqueue_reset(outbox_db, clock)
    await relay_for(settings, outbox_db, clock).run_once()
    row = await outbox_db.row(row_id)
    assert (row.status, row.secret, row.sent_at) == ("discarded", None, None)
    assert emails_counted("password_reset", "discarded") == discarded_before + 1


async def test_the_request_does_not_wait_for_the_mail_server(
    smtp_settings: Settings, outbox_db: OutboxDatabase, smtp_server: SmtpServer
) -> None:
    smtp_server.gate = gate = threading.Event()  # the server holds DATA until it is set
    async with running_app(smtp_settings) as app, asgi_client(app) as client:
        add_reset_route(app)
        response = await asyncio.wait_for(client.post("/test/request-reset"), 30)
        assert response.status_code == 204
        # answered while the mail server has not taken the message
        await eventually(lambda: _true(smtp_server.sessions_in_data == 1), "relay in DATA")
        assert smtp_server.received == []
        gate.set()
        [received] = await smtp_server.wait_for(1)
        assert LINK in received.text
        [row] = await outbox_db.rows()
        await eventually(lambda: _status(outbox_db, row.id, "sent"), "row marked sent")


async def _true(value: bool) -> bool:
    return value


async def _status(db: OutboxDatabase, row_id: int, status: str) -> bool:
    return (await db.row(row_id)).status == status


async def test_outage_the_server_is_down_then_up_then_the_message_arrives(
    settings: Settings, outbox_db: OutboxDatabase
) -> None:
    server = SmtpServer(free_port())  # not started: connections are refused
    settings = mail_settings(settings, smtp_port=server.port)
    try:
        async with running_app(settings) as app, asgi_client(app) as client:
            add_reset_route(app)
            assert (await client.post("/test/request-reset")).status_code == 204
            [row] = await outbox_db.rows()

            async def first_attempt_failed() -> bool:
                return (await outbox_db.row(row.id)).last_error is not None

            await eventually(first_attempt_failed, "the first attempt fails")
            row = await outbox_db.row(row.id)
            assert (row.status, row.attempts) == ("pending", 1)
            assert row.secret == {"link": LINK}  # kept until the message is sent
            assert row.next_attempt_at is not None
            assert row.last_attempt_at is not None
            assert row.next_attempt_at - row.last_attempt_at <= timedelta(seconds=15)

            server.start()
            due = row.next_attempt_at
            relay: EmailRelay = resources_of(app).email_relay
            relay.clock = lambda: due  # the retry is due: time has passed
            relay.wake()
            [received] = await server.wait_for(1)
            assert LINK in received.text
            await eventually(lambda: _status(outbox_db, row.id, "sent"), "row marked sent")
        row = await outbox_db.row(row.id)
        assert (row.attempts, row.secret) == (2, None)
    finally:
        server.stop()


async def test_rows_survive_a_restart_and_the_next_relay_delivers_them(
    settings: Settings, outbox_db: OutboxDatabase
) -> None:
    server = SmtpServer(free_port())
    settings = mail_settings(settings, smtp_port=server.port)
    try:
        async with running_app(settings) as app, asgi_client(app) as client:
            add_reset_route(app)
            for _ in range(3):
                assert (await client.post("/test/request-reset")).status_code == 204

            async def all_tried() -> bool:
                return all(row.attempts == 1 for row in await outbox_db.rows())

            await eventually(all_tried, "three first attempts")
        # stopped; one more row written while no relay runs (due at once)
        late_id = await enqueue_reset(outbox_db)
        rows = await outbox_db.rows()
        assert [row.status for row in rows] == ["pending"] * 4

        server.start()
        async with running_app(settings) as app:
            # the new relay's first pass (at start) sends the row due now
            received = await server.wait_for(1)
            assert LINK in received[0].text
            await eventually(lambda: _status(outbox_db, late_id, "sent"), "late row sent")
            due = max(row.next_attempt_at for row in rows if row.next_attempt_at is not None)
            relay: EmailRelay = resources_of(app).email_relay
            relay.clock = lambda: due
            relay.wake()
            await server.wait_for(4)

            async def all_sent() -> bool:
                return all(row.status == "sent" for row in await outbox_db.rows())

            await eventually(all_sent, "every row sent")
        assert len(server.received) == 4
    finally:
        server.stop()


async def test_retries_back_off_to_an_hour_and_give_up_after_a_day(
    smtp_settings: Settings,
    outbox_db: OutboxDatabase,
    smtp_server: SmtpServer,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    smtp_server.rcpt_reply = "451 4.3.0 mailbox busy, try again later"
    retried_before = emails_counted("password_reset", "retried")
    failed_before = emails_counted("password_reset", "failed")
    row_id = await enqueue_reset(outbox_db, clock)
    created = clock.now
    relay = relay_for(smtp_settings, outbox_db, clock)

    delays = []
    while True:
        await relay.run_once()
        row = await outbox_db.row(row_id)
        if row.status != "pending":
            break
        assert row.next_attempt_at is not None
        delays.append((row.next_attempt_at - clock.now).total_seconds())
        clock.now = row.next_attempt_at

    assert delays[0] <= 15  # the first retry
    assert delays[:10] == [10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600]
    assert max(delays) == 3600
    assert row.status == "failed"
    assert row.last_attempt_at == created + timedelta(days=1)  # the last try, a day on
    assert row.attempts == len(delays) + 1
    assert row.secret is None
    assert row.last_error is not None
    assert "451" in row.last_error
    assert "1 day" in row.last_error
    assert smtp_server.received == []
    assert emails_counted("password_reset", "retried") == retried_before + len(delays)
    assert emails_counted("password_reset", "failed") == failed_before + 1
    given_up = [r for r in caplog.records if r.name == "app.mail" and r.levelno == logging.ERROR]
    assert len(given_up) == 1
    assert f"email {row_id} (password_reset) failed" in given_up[0].getMessage()
    assert not any(RECIPIENT in message for message in service_log(caplog))


async def test_a_permanent_refusal_fails_at_once_and_no_token_reaches_a_log_or_the_row(
    smtp_settings: Settings,
    outbox_db: OutboxDatabase,
    smtp_server: SmtpServer,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    # a server that quotes the message back in its refusal
    smtp_server.data_reply = f"554 5.7.1 rejected for {RECIPIENT}: {LINK} ({TOKEN})"
    row_id = await enqueue_reset(outbox_db, clock)
    await relay_for(smtp_settings, outbox_db, clock).run_once()
    row = await outbox_db.row(row_id)
    assert (row.status, row.attempts, row.secret) == ("failed", 1, None)
    assert row.last_error is not None
    assert "554" in row.last_error
    assert TOKEN not in row.last_error
    assert RECIPIENT not in row.last_error
    logged = "\n".join(service_log(caplog))
    assert f"email {row_id} (password_reset) failed" in logged
    assert TOKEN not in logged
    assert RECIPIENT not in logged


async def test_a_recipient_refused_for_good_is_not_retried(
    smtp_settings: Settings,
    outbox_db: OutboxDatabase,
    smtp_server: SmtpServer,
    clock: FakeClock,
) -> None:
    smtp_server.rcpt_reply = "550 5.1.1 no such mailbox"
    row_id = await enqueue_reset(outbox_db, clock)
    await relay_for(smtp_settings, outbox_db, clock).run_once()
    row = await outbox_db.row(row_id)
    assert (row.status, row.attempts, row.secret) == ("failed", 1, None)
    assert row.last_error is not None
    assert "550" in row.last_error


async def test_a_server_that_never_answers_times_out_and_is_retried(
    settings: Settings, outbox_db: OutboxDatabase, clock: FakeClock
) -> None:
    with black_hole() as port:
        settings = mail_settings(settings, smtp_port=port, smtp_timeout=0.5)
        row_id = await enqueue_reset(outbox_db, clock)
        await relay_for(settings, outbox_db, clock).run_once()
    row = await outbox_db.row(row_id)
    assert (row.status, row.attempts) == ("pending", 1)
    assert row.last_error is not None
    assert "Timeout" in row.last_error
    assert row.next_attempt_at == clock.now + timedelta(seconds=10)


async def test_a_row_whose_relay_died_is_taken_again_once_its_lease_ends(
    smtp_settings: Settings,
    outbox_db: OutboxDatabase,
    smtp_server: SmtpServer,
    clock: FakeClock,
) -> None:
    row_id = await enqueue_reset(outbox_db, clock)
    async with outbox_db.sessionmaker() as db, db.begin():
        [claim] = await outbox.claim_due(
            db, now=clock.now, lease_until=clock.now + LEASE, limit=8
        )  # ... and the relay that took it dies
    relay = relay_for(smtp_settings, outbox_db, clock)
    await relay.run_once()
    assert smtp_server.received == []  # leased: nobody else takes it
    clock.advance(LEASE)
    await relay.run_once()
    await smtp_server.wait_for(1)
    row = await outbox_db.row(row_id)
    assert (row.status, row.attempts) == ("sent", 2)
    async with outbox_db.sessionmaker() as db, db.begin():
        assert not await outbox.finish(db, claim, status="failed", now=clock.now)
    assert (await outbox_db.row(row_id)).status == "sent"  # the late relay changes nothing


async def test_an_unknown_kind_is_retried_not_failed(
    smtp_settings: Settings,
    outbox_db: OutboxDatabase,
    smtp_server: SmtpServer,
    clock: FakeClock,
) -> None:
    """A newer replica's kind, met by an older one during a rolling upgrade."""
    async with outbox_db.sessionmaker() as db, db.begin():
        row = outbox.add(
            db,
            kind="from_the_future",
            recipient=RECIPIENT,
            context={},
            secret=None,
            now=clock(),
        )
        await db.flush()
        row_id = row.id
    await relay_for(smtp_settings, outbox_db, clock).run_once()
    stored = await outbox_db.row(row_id)
    assert (stored.status, stored.attempts) == ("pending", 1)
    assert stored.last_error is not None
    assert "from_the_future" in stored.last_error


async def test_the_backlog_gauge_and_the_counters_follow_an_outage(
    settings: Settings, outbox_db: OutboxDatabase, clock: FakeClock
) -> None:
    server = SmtpServer(free_port())
    settings = mail_settings(settings, smtp_port=server.port)
    sent_before = emails_counted("password_reset", "sent")
    retried_before = emails_counted("password_reset", "retried")
    relay = relay_for(settings, outbox_db, clock)
    for _ in range(2):
        await enqueue_reset(outbox_db, clock)
    await relay.run_once()
    assert backlog_gauge() == 2
    assert emails_counted("password_reset", "retried") == retried_before + 2
    server.start()
    try:
        clock.advance(timedelta(seconds=10))
        await relay.run_once()
        await server.wait_for(2)
    finally:
        server.stop()
    assert backlog_gauge() == 0
    assert emails_counted("password_reset", "sent") == sent_before + 2


async def test_the_relay_keeps_running_when_the_database_is_gone(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A pass that fails (here: no outbox table) is logged once and retried, never raised
    into the server process."""
    broken = mail_settings(
        settings, database_url=f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}", email_backend="off"
    )
    engine = create_engine(broken)
    relay = EmailRelay(
        broken, create_sessionmaker(engine), create_sender(broken), poll_seconds=0.05
    )
    relay.start()
    try:

        async def warned() -> bool:
            return any("outbox cannot be read" in r.getMessage() for r in caplog.records)

        await eventually(warned, "a warning")
        await asyncio.sleep(0.2)  # several more failed passes
        assert sum("outbox cannot be read" in r.getMessage() for r in caplog.records) == 1
    finally:
        await relay.aclose()
        await engine.dispose()


async def test_a_claim_takes_at_most_a_batch_and_concurrent_claims_take_other_rows(
    outbox_db: OutboxDatabase, clock: FakeClock
) -> None:
    ids = [await enqueue_reset(outbox_db, clock) for _ in range(3 * BATCH_SIZE)]
    lease = clock.now + LEASE
    async with outbox_db.sessionmaker() as first, first.begin():
        taken = await outbox.claim_due(first, now=clock.now, lease_until=lease, limit=BATCH_SIZE)
        assert [email.id for email in taken] == ids[:BATCH_SIZE]  # oldest first
        if outbox_db.engine.dialect.name == "postgresql":
            # while the first claim's transaction is open: no waiting, other rows
            async with outbox_db.sessionmaker() as second, second.begin():
                other = await outbox.claim_due(
                    second, now=clock.now, lease_until=lease, limit=BATCH_SIZE
                )
            assert [email.id for email in other] == ids[BATCH_SIZE : 2 * BATCH_SIZE]
