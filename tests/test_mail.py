"""Email messages: the kinds and their templates, the multipart message, and `enqueue`
writing outbox rows in the caller's transaction only."""

from __future__ import annotations

from pathlib import Path

import pytest
from jinja2 import meta
from sqlalchemy.ext.asyncio import AsyncSession

from app.cli import main
from app.core.config import Settings
from app.mail.messages import (
    GLOBAL_NAMES,
    KINDS,
    TEMPLATE_DIR,
    MailKind,
    _environment,
    compose,
)
from app.models import OutboxEmail
from app.services import mail
from tests.smtp_server import OutboxDatabase

pytest_plugins = ["tests.smtp_server"]

TOKEN = "tok_" + "x" * 40


def sample(kind: MailKind) -> tuple[dict[str, str], dict[str, str]]:
    spec = KINDS[kind]
    context = {name: f"<{name}> & co" for name in spec.context}
    secret = {name: f"https://app.example/x?token={TOKEN}" for name in spec.secret}
    return context, secret


def _names(template: str) -> set[str]:
    source = (TEMPLATE_DIR / template).read_text()
    return set(meta.find_undeclared_variables(_environment.parse(source)))


@pytest.mark.parametrize("kind", list(MailKind))
def test_each_kind_has_templates_using_exactly_its_declared_values(kind: MailKind) -> None:
    spec = KINDS[kind]
    used = set().union(
        *(_names(f"{kind.value}{suffix}") for suffix in (".subject.txt", ".txt", ".html"))
    )
    assert used - GLOBAL_NAMES == spec.context | spec.secret
    assert not spec.context & spec.secret
    assert _names("_layout.html") <= GLOBAL_NAMES


@pytest.mark.parametrize("kind", list(MailKind))
def test_a_message_is_multipart_text_and_html_naming_the_service(kind: MailKind) -> None:
    settings = Settings(
        _env_file=None,
        secret_key="k" * 40,
        service_name="Acme Accounts",
        email_from="Acme <accounts@acme.example>",
    )
    context, secret = sample(kind)
    message = compose(
        settings,
        kind=kind,
        recipient="bob@example.com",
        context=context,
        secret=secret,
        message_id_hint="outbox.1",
    )
    assert message.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in message.iter_parts()] == [
        "text/plain",
        "text/html",
    ]
    assert message["From"] == "Acme <accounts@acme.example>"
    assert message["To"] == "bob@example.com"
    assert message["Subject"].startswith("Acme Accounts: ")
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["Message-ID"].endswith("@acme.example>")
    assert message["Date"]
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert text is not None
    assert html is not None
    text_content, html_content = text.get_content(), html.get_content()
    assert "Acme Accounts" in text_content
    assert "Acme Accounts" in html_content
    for value in context.values():
        assert value in text_content  # plain text as it is
        assert "&lt;" in html_content  # HTML escaped
        assert value not in html_content
    for link in secret.values():
        assert link in text_content
        assert f'href="{link}"' in html_content


def test_compose_refuses_values_the_kind_does_not_declare() -> None:
    settings = Settings(_env_file=None, secret_key="k" * 40)
    with pytest.raises(ValueError, match="password_reset"):
        compose(
            settings,
            kind=MailKind.PASSWORD_RESET,
            recipient="bob@example.com",
            context={"username": "bob"},
            secret={"link": "x"},
            message_id_hint="x",
        )


def enqueue_reset(db: AsyncSession, context: dict[str, str], secret: dict[str, str]) -> OutboxEmail:
    return mail.enqueue(
        db, kind=MailKind.PASSWORD_RESET, to="bob@example.com", context=context, secret=secret
    )


async def test_enqueue_writes_a_row_with_the_transaction_only(outbox_db: OutboxDatabase) -> None:
    context, secret = sample(MailKind.PASSWORD_RESET)
    async with outbox_db.sessionmaker() as db:
        enqueue_reset(db, context, secret)
        await db.rollback()
    assert await outbox_db.rows() == []

    async with outbox_db.sessionmaker() as db, db.begin():
        row = enqueue_reset(db, context, secret)
    [stored] = await outbox_db.rows()
    assert stored.id == row.id
    assert (stored.kind, stored.recipient, stored.status, stored.attempts) == (
        "password_reset",
        "bob@example.com",
        "pending",
        0,
    )
    assert stored.context == context
    assert stored.secret == secret
    assert stored.next_attempt_at == stored.created_at
    assert stored.sent_at is None
    assert stored.last_error is None


@pytest.mark.parametrize(
    ("context", "secret"),
    [
        ({"username": "bob"}, {"link": "x"}),  # valid_for missing
        ({"username": "bob", "valid_for": "1 hour"}, {}),  # the link missing
        ({"username": "bob", "valid_for": "1 hour", "link": "x"}, {}),  # the link kept
        ({"username": "bob", "valid_for": "1 hour", "extra": "x"}, {"link": "x"}),
    ],
)
async def test_enqueue_refuses_values_the_kind_does_not_declare(
    outbox_db: OutboxDatabase, context: dict[str, str], secret: dict[str, str]
) -> None:
    async with outbox_db.sessionmaker() as db:
        with pytest.raises(ValueError, match="password_reset"):
            enqueue_reset(db, context, secret)


@pytest.mark.parametrize(
    ("backend", "argv_to", "code", "said"),
    [
        ("console", "ops@example.com", 0, "Subject: userservice: test message"),
        ("off", "ops@example.com", 1, "EMAIL_BACKEND=off: no message sent"),
        ("console", "not-an-address", 2, "--to:"),
    ],
)
def test_send_test_email_reports_the_outcome(
    backend: str,
    argv_to: str,
    code: int,
    said: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SECRET_KEY", "k" * 40)
    monkeypatch.setenv("EMAIL_BACKEND", backend)
    assert main(["send-test-email", "--to", argv_to]) == code
    assert said in capsys.readouterr().err
