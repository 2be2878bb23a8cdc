"""Logging: one JSON object per line on stdout, configured once by ``python -m app serve``.

Requests are logged by `RequestMiddleware` (uvicorn's access log is off), through
`RequestLog`: with the served set-up it writes the line itself, else it logs the record
`log_request` makes. No record carries a request body or header; as a second line of
defence, anything that looks like a bearer credential or a JWT is replaced before a line
is written.
Tracebacks of database errors leave out the errors' messages, which can quote the values of
a row.

Records are formatted and written by a thread of their own (`BackgroundStreamHandler`): the
event loop only queues them, so a slow or blocked standard output (a full pipe) never stalls
requests; lines queued together are written together.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import sys
import threading
import time
import traceback
from contextvars import ContextVar
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii
from queue import Empty, SimpleQueue
from typing import IO, Any

from sqlalchemy.exc import StatementError

REQUEST_LOGGER = "app.requests"

# The request being served, added to every record logged while serving it.
request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

_SECRETS = (
    (re.compile(r"(?i)\bbearer\s+\S+"), "[redacted]"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), "[redacted-jwt]"),
)


def redact(text: str) -> str:
    # The patterns only match where these substrings are (a cheap test: most lines have
    # neither).
    if "eyJ" not in text and "earer" not in text.lower():
        return text
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


# Exceptions of the database layer. Their messages can hold the values of a statement or
# a row, whatever the engine's hide_parameters: PostgreSQL's "DETAIL: Failing row contains
# (...)" (the password hash included), asyncpg's "invalid input for query argument $1:
# '...'". A traceback shows them (and the exceptions they wrap) by type and by what names
# the failure: SQLSTATE, constraint, table, column, and the SQL with its placeholders.
_DATABASE_ERROR_MODULES = ("sqlalchemy.", "asyncpg.", "aiosqlite.", "sqlite3")
_DATABASE_ERROR_FIELDS = (
    "sqlstate",  # asyncpg, and SQLAlchemy's asyncpg exceptions
    "sqlite_errorname",  # sqlite3
    "schema_name",
    "table_name",
    "column_name",
    "data_type_name",
    "constraint_name",
)
_CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"


def _from_database_layer(exc: BaseException) -> bool:
    return type(exc).__module__.startswith(_DATABASE_ERROR_MODULES)


def _chain(exc: BaseException, seen: set[int]) -> list[BaseException]:
    """``exc``, its causes and contexts, and the members of exception groups."""
    if id(exc) in seen:
        return []
    seen.add(id(exc))
    found = [exc]
    for inner in (exc.__cause__, exc.__context__):
        if inner is not None:
            found += _chain(inner, seen)
    if isinstance(exc, BaseExceptionGroup):
        for member in exc.exceptions:
            found += _chain(member, seen)
    return found


def _hidden_message(exc: BaseException) -> str:
    facts = [
        f"{field}={value}"
        for field in _DATABASE_ERROR_FIELDS
        if isinstance(value := getattr(exc, field, None), str) and value
    ]
    if isinstance(exc, StatementError) and exc.statement:
        facts.append(f"SQL: {exc.statement}")
    kind = type(exc)
    name = (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )
    return f"{name}: [message left out: database error] {'; '.join(facts)}".rstrip() + "\n"


def database_error_facts(exc: BaseException) -> str:
    """A database error named without its message (which can quote values): its type and
    what its chain says of the failure (SQLSTATE, constraint, table, column)."""
    facts = {
        f"{field}={value}": None
        for item in _chain(exc, set())
        for field in _DATABASE_ERROR_FIELDS
        if isinstance(value := getattr(item, field, None), str) and value
    }
    return "; ".join([type(exc).__name__, *facts])


def _format_hiding(exc: BaseException, hide: bool, seen: set[int]) -> list[str]:
    """traceback.format_exception's layout, with the messages of database errors and of the
    exceptions they wrap replaced by `_hidden_message`."""
    seen.add(id(exc))
    hide = hide or _from_database_layer(exc)
    lines: list[str] = []
    if exc.__cause__ is not None and id(exc.__cause__) not in seen:
        lines += [*_format_hiding(exc.__cause__, hide, seen), _CAUSE]
    elif (
        exc.__context__ is not None
        and not exc.__suppress_context__
        and id(exc.__context__) not in seen
    ):
        lines += [*_format_hiding(exc.__context__, hide, seen), _CONTEXT]
    if exc.__traceback__ is not None:
        lines += ["Traceback (most recent call last):\n", *traceback.format_tb(exc.__traceback__)]
    lines += [_hidden_message(exc)] if hide else traceback.format_exception_only(exc)
    if isinstance(exc, BaseExceptionGroup):
        for number, member in enumerate(exc.exceptions, 1):
            lines.append(f"\n[{type(exc).__name__} member {number} of {len(exc.exceptions)}]\n")
            lines += _format_hiding(member, hide, seen)
    return lines


def format_exception(exc: BaseException) -> str:
    """The traceback of ``exc`` as traceback.format_exception writes it, except that when a
    database error is part of it, that error's message (and the messages of the exceptions
    it wraps) are left out: see _DATABASE_ERROR_MODULES."""
    if not any(_from_database_layer(item) for item in _chain(exc, set())):
        return "".join(traceback.format_exception(exc)).rstrip("\n")
    return "".join(_format_hiding(exc, hide=False, seen=set())).rstrip("\n")


_json_str = encode_basestring_ascii  # json.dumps's own for a str: quoted, escaped, ASCII
_NO_REQUEST_ID = object()  # a record's request_id before a handler captured it


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", "request_id"?, ...fields, "exc_info"?}``.

    Structured fields come from ``extra={"fields": {...}}``. The request id is the one
    captured on the record when it was queued (`BackgroundStreamHandler`), else the current
    one.
    """

    def __init__(self) -> None:
        super().__init__()
        self._clock = UtcClock()

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self._clock.text(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        request_id = getattr(record, "request_id", _NO_REQUEST_ID)
        if request_id is _NO_REQUEST_ID:
            request_id = request_id_var.get()
        line = getattr(record, "request_line", None)
        if line is not None and not record.exc_info:
            text = _request_line_json(entry, request_id, line)
            if text is not None:
                return text
        if request_id is not None:
            entry["request_id"] = request_id
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info and record.exc_info[1] is not None:
            entry["exc_info"] = redact(format_exception(record.exc_info[1]))
        return json.dumps(entry, default=str)


class UtcClock:
    """ISO 8601 times with milliseconds, UTC (``2026-11-30T00:46:14.123+00:00``); the part
    up to the seconds is computed once per second (kept as one tuple: threads share it)."""

    def __init__(self) -> None:
        self._second: tuple[int, str] = (-1, "")

    def text(self, created: float) -> str:
        second = int(created)
        cached_second, prefix = self._second
        if second != cached_second:
            prefix = datetime.fromtimestamp(second, UTC).isoformat()[:19]
            self._second = (second, prefix)
        milliseconds = min(round((created - second) * 1_000_000) // 1000, 999)
        return f"{prefix}.{milliseconds:03d}+00:00"


def _request_line_json(
    entry: dict[str, Any], request_id: object, line: tuple[object, ...]
) -> str | None:
    """What ``json.dumps`` writes for ``entry`` with the request id and the request line's
    fields, written directly (a quarter of the time); None as `_request_line_text`."""
    head = ", ".join(f"{_json_str(key)}: {_json_str(value)}" for key, value in entry.items())
    return _request_line_text(head, request_id, *line)


def _request_line_text(
    head: str,
    request_id: object,
    method: object,
    route: object,
    status: object,
    duration_ms: object,
    user_id: object,
) -> str | None:
    """A request line's JSON object as ``json.dumps`` writes it: ``head`` (its first
    members, already JSON), then the request id and the request's fields. None when a value
    is of a type this does not handle (the caller then uses ``json.dumps``)."""
    if not (
        type(method) is str
        and type(route) is str
        and type(status) is int
        and type(duration_ms) is float
        and math.isfinite(duration_ms)
        and (user_id is None or type(user_id) is int)
        and (request_id is None or type(request_id) is str)
    ):
        return None
    rid = "" if request_id is None else f'"request_id": {_json_str(request_id)}, '
    uid = "null" if user_id is None else int.__repr__(user_id)
    return (
        f'{{{head}, {rid}"method": {_json_str(method)}, "route": {_json_str(route)}, '
        f'"status": {status}, "duration_ms": {float.__repr__(duration_ms)}, "user_id": {uid}}}'
    )


class BackgroundStreamHandler(logging.Handler):
    """Writes formatted records to ``stream`` from a thread of its own.

    ``emit`` (on the caller's thread: the event loop) only fixes what can change later (the
    message with its arguments, the request id of the current context) and queues the
    record; the thread formats whatever is queued and writes it in one call. When the stream
    is so slow that ``max_backlog`` records wait, further records are dropped and counted,
    and a line saying how many follows once the stream takes lines again. ``flush`` waits
    (up to ``timeout`` seconds) until what was queued before it is written; ``close`` writes
    what is queued, then ends the thread.
    """

    def __init__(
        self, stream: IO[str] | None = None, max_backlog: int = 10_000, timeout: float = 5.0
    ) -> None:
        super().__init__()
        self.stream: IO[str] = stream if stream is not None else sys.stderr
        self.max_backlog = max_backlog
        self.timeout = timeout
        self.dropped = 0
        self._queue: SimpleQueue[logging.LogRecord | str | threading.Event | None] = SimpleQueue()
        self._thread = threading.Thread(target=self._write_loop, name="log-writer", daemon=True)
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        if self._queue.qsize() >= self.max_backlog:
            self.dropped += 1
            return
        try:
            record.message = record.getMessage()
            record.msg, record.args = record.message, None
            if not hasattr(record, "request_id"):
                record.request_id = request_id_var.get()
        except Exception:
            self.handleError(record)
            return
        self._queue.put(record)

    def write_line(self, line: str) -> None:
        """Queue a line formatted by the caller (`RequestLog`), under the same backlog."""
        if self._queue.qsize() >= self.max_backlog:
            self.dropped += 1
            return
        self._queue.put(line)

    def _write_loop(self) -> None:
        queue = self._queue
        while True:
            items = [queue.get()]
            while len(items) < 1000:
                try:
                    items.append(queue.get_nowait())
                except Empty:
                    break
            lines: list[str] = []
            done: list[threading.Event] = []
            stop = False
            for item in items:
                if isinstance(item, str):
                    lines.append(item)
                elif item is None:
                    stop = True
                elif isinstance(item, threading.Event):
                    done.append(item)
                else:
                    try:
                        lines.append(self.format(item))
                    except Exception:
                        self.handleError(item)
            if self.dropped:
                dropped, self.dropped = self.dropped, 0  # a lost increment loses a count only
                lines.append(self._dropped_line(dropped))
            if lines:
                # A closed or broken stream: there is nowhere to report it to.
                with contextlib.suppress(Exception):
                    self.stream.write("\n".join(lines) + "\n")
                    self.stream.flush()
            for event in done:
                event.set()
            if stop:
                return

    def _dropped_line(self, dropped: int) -> str:
        record = logging.LogRecord(
            __name__, logging.WARNING, __file__, 0, "%d log records dropped", (dropped,), None
        )
        record.request_id = None
        return self.format(record)

    def flush(self) -> None:
        if self._thread.is_alive():
            event = threading.Event()
            self._queue.put(event)
            event.wait(self.timeout)

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(self.timeout)
        super().close()


def log_request(
    logger: logging.Logger,
    method: str,
    route: str,
    status: int,
    duration_ms: float,
    user_id: int | None,
) -> None:
    """``logger.info("%s %s %d", method, route, status, extra={"fields": {"method", "route",
    "status", "duration_ms", "user_id"}})``, without looking up the caller's file and line
    (which no line shows); `JsonFormatter` writes the line directly."""
    record = logger.makeRecord(
        logger.name, logging.INFO, "", 0, "%s %s %d", (method, route, status), None
    )
    record.fields = {
        "method": method,
        "route": route,
        "status": status,
        "duration_ms": duration_ms,
        "user_id": user_id,
    }
    record.request_line = (method, route, status, duration_ms, user_id)
    logger.handle(record)


class RequestLog:
    """The request lines of `RequestMiddleware`, as `log_request` logs them.

    When the request logger's records would reach one handler only, a
    `BackgroundStreamHandler` with a `JsonFormatter` (what ``python -m app serve``
    configures), the line is written here, as that formatter would write the record, and
    queued as text: no LogRecord and no dispatch through the logging tree, which cost a
    tenth of the instructions of a request to ``/healthz`` (making the LogRecord alone
    20k). Any other set-up (a test's capturing handler, a filter, another formatter, a
    second handler) gets the record."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self._logger_json = _json_str(logger.name)
        self._clock = UtcClock()

    def write(
        self,
        request_id: str | None,
        method: str,
        route: str,
        status: int,
        duration_ms: float,
        user_id: int | None,
    ) -> None:
        logger = self.logger
        if not logger.isEnabledFor(logging.INFO):
            return
        handler = _sole_json_handler(logger)
        if handler is not None:
            message = redact(f"{method} {route} {status}")
            head = (
                f'"time": "{self._clock.text(time.time())}", "level": "INFO", '
                f'"logger": {self._logger_json}, "message": {_json_str(message)}'
            )
            text = _request_line_text(head, request_id, method, route, status, duration_ms, user_id)
            if text is not None:
                handler.write_line(text)
                return
        # The record takes the request id from request_id_var, which the caller has set.
        log_request(logger, method, route, status, duration_ms, user_id)


def _sole_json_handler(logger: logging.Logger) -> BackgroundStreamHandler | None:
    """The one handler ``logger``'s INFO records reach, when it is a
    `BackgroundStreamHandler` formatting with `JsonFormatter` and nothing on the way
    filters; else None."""
    current = logger
    while not current.handlers:
        if current.filters or not current.propagate or current.parent is None:
            return None
        current = current.parent
    handlers = current.handlers
    if current.filters or (current.propagate and current.parent is not None):
        return None  # filtered, or the records go on to more handlers
    handler = handlers[0]
    if (
        len(handlers) != 1
        or type(handler) is not BackgroundStreamHandler
        or type(handler.formatter) is not JsonFormatter
        or handler.filters
        or handler.level > logging.INFO
    ):
        return None
    return handler


def logging_config(level: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for the app and uvicorn (given to ``uvicorn.run``, so
    every worker process applies it)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {
            "stdout": {
                "()": f"{__name__}.BackgroundStreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stdout",
            }
        },
        "root": {"handlers": ["stdout"], "level": level},
        "loggers": {
            "uvicorn": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.error": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
    }
