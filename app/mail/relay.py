"""The outbox relay: a background task in each server process that delivers due emails.

Requests never talk to the mail server: they write an outbox row in their own transaction
(`app.services.mail.enqueue`), and wake this process's relay once that transaction is
committed. The relay then, over and over:

1. claims up to ``batch_size`` due rows in one short transaction
   (`app.repositories.outbox.claim_due`): each claim counts an attempt and moves the row's
   ``next_attempt_at`` forward by `LEASE`, so no other relay (another replica, another
   worker) takes it meanwhile; on PostgreSQL the claim skips rows another relay is claiming
   (``FOR UPDATE SKIP LOCKED``), so relays share the work without waiting for each other;
2. builds and sends those messages concurrently, outside any transaction (no database
   connection is held while a mail server answers), each within `SEND_DEADLINE`;
3. records the outcomes in one transaction: sent (secret erased), retried later (first
   after 10 s, doubling up to an hour), or failed (after a day, or refused for good; secret
   erased too).

A lease rather than a row lock held during the send: a lock would keep a database
connection and a transaction open for as long as the mail server takes (SMTP_TIMEOUT per
step), taking connections from the pool the requests use; and the lease works the same on
SQLite. Its cost: a process that dies in the middle of a send leaves the row claimed until
the lease runs out (2 minutes), and the message may then be sent twice (the server may
have taken it just before the crash): delivery is at least once, as with any outbox.

Rows survive restarts: a new relay delivers whatever is due. Between wake-ups the relay
sleeps until the earliest pending row is due, at most `POLL_SECONDS` (rows written by
another process, or whose lease ran out, are found then).
"""

from __future__ import annotations

import asyncio
import logging
import re
import weakref
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.config import Settings
from app.core.metrics import EmailOutcome, record_email, set_email_backlog
from app.mail.messages import MailKind, compose
from app.mail.senders import DeliveryError, Sender, create_sender
from app.models.base import utcnow
from app.models.outbox import ERROR_MAX
from app.repositories import outbox
from app.repositories.outbox import ClaimedEmail

logger = logging.getLogger("app.mail")

Clock = Callable[[], datetime]

LEASE = timedelta(minutes=2)
SEND_DEADLINE = 90.0  # seconds for one message, all SMTP steps included; less than LEASE
POLL_SECONDS = 10.0
BATCH_SIZE = 8
STOP_GRACE_SECONDS = 10.0  # how long aclose() lets the sends under way finish
_MIN_SLEEP = 0.1
_TOKEN_LIKE = re.compile(r"[A-Za-z0-9_-]{16,}")

Outcome = Literal["sent", "discarded", "transient", "permanent"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When a failed attempt is tried again: ``first_delay`` after the first failure,
    doubling after each one up to ``max_delay``; the last attempt is made
    ``give_up_after`` the row was written, and if it fails too the message is failed."""

    first_delay: timedelta = timedelta(seconds=10)
    max_delay: timedelta = timedelta(hours=1)
    give_up_after: timedelta = timedelta(days=1)

    def next_attempt(self, attempts: int, created_at: datetime, now: datetime) -> datetime | None:
        """After ``attempts`` failed attempts, at ``now``: the next one, or None (give up)."""
        deadline = created_at + self.give_up_after
        if now >= deadline:
            return None
        delay = min(self.first_delay * (1 << min(max(attempts - 1, 0), 30)), self.max_delay)
        return min(now + delay, deadline)


@dataclass(frozen=True, slots=True)
class _Result:
    email: ClaimedEmail
    outcome: Outcome
    at: datetime
    error: str | None = None


# The relays running in this process, woken after a commit that added outbox rows.
_RELAYS: weakref.WeakSet[EmailRelay] = weakref.WeakSet()


async def wake_relays() -> None:
    """Wake this process's relays (an `app.core.db.after_commit` callback)."""
    for relay in list(_RELAYS):
        relay.wake()


def start_email_relay(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> EmailRelay:
    """The lifespan's relay: the backend EMAIL_BACKEND names, started."""
    relay = EmailRelay(settings, sessionmaker, create_sender(settings))
    relay.start()
    return relay


class EmailRelay:
    """Delivers due outbox rows through ``sender``; `start` it on the event loop that serves
    the requests, `aclose` it before the engine is disposed. ``clock`` gives the time the
    rows are compared with (tests move it to drive retries without waiting)."""

    def __init__(
        self,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        sender: Sender,
        *,
        clock: Clock = utcnow,
        policy: RetryPolicy | None = None,
        poll_seconds: float = POLL_SECONDS,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        self.clock = clock
        self.sender = sender
        self._settings = settings
        self._sessionmaker = sessionmaker
        self._policy = policy or RetryPolicy()
        self._poll_seconds = poll_seconds
        self._batch_size = batch_size
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        # Outcomes not yet written (the database failed after the sends): written first
        # on the next pass, before anything is claimed again.
        self._unrecorded: list[_Result] = []

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._run(), name="email-relay")
        _RELAYS.add(self)
        logger.info("email relay started: %s", self.sender.describe())

    def wake(self) -> None:
        """Look for due rows now (callable from any thread or event loop)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._wake.set()
        else:
            with suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._wake.set)

    async def aclose(self) -> None:
        """Stop: the sends under way may finish (`STOP_GRACE_SECONDS`), then the task is
        cancelled. Rows claimed and not finished are taken again when their lease ends."""
        _RELAYS.discard(self)
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        self._wake.set()
        _, pending = await asyncio.wait({task}, timeout=STOP_GRACE_SECONDS)
        if pending:
            task.cancel()
        with suppress(asyncio.CancelledError):
            await task

    async def _run(self) -> None:
        failing = False
        while not self._stopping:
            self._wake.clear()
            try:
                delay = await self.run_once()
            except Exception:
                # The database is down or refusing: keep the process up and try again. The
                # log formatter leaves database errors' messages (row values) out.
                if not failing:
                    logger.warning(
                        "email relay: the outbox cannot be read or written; trying again "
                        "every %.0f s",
                        self._poll_seconds,
                        exc_info=True,
                    )
                failing = True
                delay = self._poll_seconds
            else:
                if failing:
                    logger.warning("email relay: the outbox is reachable again")
                failing = False
            if self._stopping:
                break
            with suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    async def run_once(self) -> float:
        """Deliver every row due at ``clock()``, batch after batch; the seconds until the
        next pending row is due (at most the poll interval)."""
        await self._record()
        while not self._stopping:
            now = self.clock()
            async with self._sessionmaker() as db, db.begin():
                batch = await outbox.claim_due(
                    db, now=now, lease_until=now + LEASE, limit=self._batch_size
                )
            if not batch:
                break
            self._unrecorded += await asyncio.gather(*(self._deliver(email) for email in batch))
            await self._record()
        async with self._sessionmaker() as db:
            count, earliest = await outbox.backlog(db)
        set_email_backlog(count)
        if earliest is None:
            return self._poll_seconds
        wait = (earliest - self.clock()).total_seconds()
        return min(max(wait, _MIN_SLEEP), self._poll_seconds)

    async def _deliver(self, email: ClaimedEmail) -> _Result:
        try:
            # An unknown kind is retried, not failed: during a rolling upgrade an older
            # replica may claim a row that a newer one wrote.
            message = compose(
                self._settings,
                kind=MailKind(email.kind),
                recipient=email.recipient,
                context=email.context,
                secret=email.secret,
                message_id_hint=f"outbox.{email.id}",
            )
            async with asyncio.timeout(SEND_DEADLINE):
                await self.sender.send(message)
        except DeliveryError as exc:
            outcome: Outcome = "permanent" if exc.permanent else "transient"
            return _Result(email, outcome, self.clock(), _scrub(exc.reason, email))
        except TimeoutError:
            error = f"no answer within {SEND_DEADLINE:.0f} s"
            return _Result(email, "transient", self.clock(), error)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            return _Result(email, "transient", self.clock(), _scrub(error, email))
        return _Result(email, "discarded" if self.sender.discards else "sent", self.clock())

    async def _record(self) -> None:
        if not self._unrecorded:
            return
        results = self._unrecorded
        events: list[tuple[_Result, EmailOutcome, datetime | None]] = []
        async with self._sessionmaker() as db, db.begin():
            for result in results:
                events.append(await self._apply(db, result))
        self._unrecorded = []
        for result, outcome, next_attempt in events:
            record_email(result.email.kind, outcome)
            _log(result, outcome, next_attempt)

    async def _apply(
        self, db: AsyncSession, result: _Result
    ) -> tuple[_Result, EmailOutcome, datetime | None]:
        email = result.email
        if result.outcome in ("sent", "discarded"):
            status: Literal["sent", "discarded"] = (
                "sent" if result.outcome == "sent" else "discarded"
            )
            await outbox.finish(db, email, status=status, now=result.at)
            return result, status, None
        assert result.error is not None
        next_attempt = (
            self._policy.next_attempt(email.attempt, email.created_at, result.at)
            if result.outcome == "transient"
            else None
        )
        if next_attempt is None:
            error = result.error
            if result.outcome == "transient":
                error = f"no success in {self._policy.give_up_after}: {error}"
            await outbox.finish(db, email, status="failed", now=result.at, error=error)
            return result, "failed", None
        await outbox.reschedule(db, email, next_attempt_at=next_attempt, error=result.error)
        return result, "retried", next_attempt


def _log(result: _Result, outcome: EmailOutcome, next_attempt: datetime | None) -> None:
    """One line per attempt: the row id and kind, never the address or a secret."""
    email = result.email
    if outcome == "sent":
        logger.info("email %d (%s) sent, attempt %d", email.id, email.kind, email.attempt)
    elif outcome == "discarded":
        logger.info("email %d (%s) discarded: EMAIL_BACKEND=off", email.id, email.kind)
    elif outcome == "retried":
        assert next_attempt is not None
        logger.warning(
            "email %d (%s) attempt %d failed: %s; next attempt at %s",
            email.id,
            email.kind,
            email.attempt,
            result.error,
            next_attempt.isoformat(timespec="seconds"),
        )
    else:
        logger.error(
            "email %d (%s) failed after %d attempt(s), given up: %s",
            email.id,
            email.kind,
            email.attempt,
            result.error,
        )


def _scrub(text: str, email: ClaimedEmail) -> str:
    """An error's text without the message's secret values (nor any token-like run found in
    them) or its recipient: it is stored in the row and logged."""
    for value in email.secret.values():
        if isinstance(value, str) and value:
            text = text.replace(value, "[secret]")
            for token in _TOKEN_LIKE.findall(value):
                text = text.replace(token, "[secret]")
    text = re.sub(re.escape(email.recipient), "[recipient]", text, flags=re.IGNORECASE)
    return text[:ERROR_MAX]
