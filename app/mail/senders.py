"""The delivery backends (EMAIL_BACKEND): smtp, console, file, off.

A sender takes one finished message and either returns (the backend accepted it) or
raises `DeliveryError`, saying whether trying again later may help. The relay decides
what to do with that (app/mail/relay.py); the send-test-email command reports it.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import sys
import uuid
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol, TextIO

import aiosmtplib

from app.core.config import Settings
from app.mail.messages import plain_text


class DeliveryError(Exception):
    """The backend did not take the message. ``permanent``: trying again cannot help (the
    server refused the recipient or the message for good, SMTP 5xx); otherwise the cause
    may pass (server down, timed out, 4xx, a configuration that can be fixed)."""

    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


class Sender(Protocol):
    name: str
    # True for `off`: the message is dropped, not delivered (the outbox says so).
    discards: bool

    async def send(self, message: EmailMessage) -> None: ...

    def describe(self) -> str:
        """Where messages go, for humans (no secret)."""
        ...


class SmtpSender:
    """One connection per message, through aiosmtplib: every step bounded by
    SMTP_TIMEOUT; STARTTLS required under ``starttls`` (a server that does not offer it is
    an error, never a silent downgrade); certificates verified against the system's trust
    store (``tls_context`` replaces it, e.g. in tests)."""

    name = "smtp"
    discards = False

    def __init__(self, settings: Settings, *, tls_context: ssl.SSLContext | None = None) -> None:
        assert settings.smtp_host is not None  # Settings requires it with EMAIL_BACKEND=smtp
        self._host = settings.smtp_host
        self._port = settings.smtp_port
        self._security = settings.smtp_security
        self._timeout = settings.smtp_timeout
        self._username = settings.smtp_username
        self._password = settings.smtp_password
        self._tls_context = tls_context

    def describe(self) -> str:
        return f"smtp {self._host}:{self._port} ({self._security})"

    async def send(self, message: EmailMessage) -> None:
        client = aiosmtplib.SMTP(
            hostname=self._host,
            port=self._port,
            username=self._username,
            password=self._password.get_secret_value() if self._password else None,
            use_tls=self._security == "tls",
            start_tls=self._security == "starttls",
            timeout=self._timeout,
            tls_context=self._tls_context,
        )
        try:
            await client.connect()
            try:
                await client.send_message(message)
            finally:
                await _quit(client)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [refused.code for refused in exc.recipients]
            raise DeliveryError(
                "recipient refused: " + "; ".join(f"{r.code} {r.message}" for r in exc.recipients),
                permanent=all(code >= 500 for code in codes),
            ) from None
        except aiosmtplib.SMTPDataError as exc:
            raise DeliveryError(
                f"message refused: {exc.code} {exc.message}", permanent=exc.code >= 500
            ) from None
        except aiosmtplib.SMTPResponseException as exc:
            # The greeting, HELO, STARTTLS, AUTH or MAIL FROM refused: about the server or our
            # configuration, not this message; retried.
            raise DeliveryError(f"{type(exc).__name__}: {exc.code} {exc.message}") from None
        except (aiosmtplib.SMTPException, OSError) as exc:  # down, unreachable, timed out, TLS
            raise DeliveryError(f"{type(exc).__name__}: {exc}") from None


async def _quit(client: aiosmtplib.SMTP) -> None:
    """End the session politely; once the message is accepted, a failed QUIT changes
    nothing (it must not turn a delivered message into a retried one)."""
    if not client.is_connected:
        return
    try:
        await client.quit()
    except (aiosmtplib.SMTPException, OSError):
        client.close()


class ConsoleSender:
    """Development: each message's headers and plain text on standard error, links
    included (the only place a token may be printed)."""

    name = "console"
    discards = False

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    def describe(self) -> str:
        return "console (standard error)"

    async def send(self, message: EmailMessage) -> None:
        stream = self._stream or sys.stderr
        rule = "-" * 72
        headers = "\n".join(
            f"{name}: {message[name]}" for name in ("From", "To", "Subject", "Message-ID")
        )
        stream.write(f"{rule}\n{headers}\n\n{plain_text(message).rstrip()}\n{rule}\n")
        stream.flush()


class FileSender:
    """One ``.eml`` file per message in EMAIL_FILE_DIR (created with mode 0700; files
    0600: they hold the links). Written under a temporary name, then renamed: a reader
    never sees half a message."""

    name = "file"
    discards = False

    def __init__(self, directory: Path) -> None:
        self._directory = directory

    def describe(self) -> str:
        return f"file {self._directory}"

    async def send(self, message: EmailMessage) -> None:
        try:
            await asyncio.to_thread(self._write, message.as_bytes(policy=policy.SMTP))
        except OSError as exc:
            raise DeliveryError(f"cannot write to {self._directory}: {exc.strerror}") from None

    def _write(self, data: bytes) -> None:
        self._directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        name = f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:12]}.eml"
        temporary = self._directory / f".{name}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(temporary, self._directory / name)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise


class OffSender:
    """EMAIL_BACKEND=off: nothing is sent; the outbox marks each message discarded."""

    name = "off"
    discards = True

    def describe(self) -> str:
        return "off (messages are discarded)"

    async def send(self, message: EmailMessage) -> None:
        return None


def create_sender(settings: Settings) -> Sender:
    match settings.mail_backend:
        case "smtp":
            return SmtpSender(settings)
        case "console":
            return ConsoleSender()
        case "file":
            return FileSender(settings.email_file_dir)
        case "off":
            return OffSender()
