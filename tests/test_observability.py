"""Request ids, JSON request logs without secrets, Prometheus metrics."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Response
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from app.core.logging import (
    BackgroundStreamHandler,
    JsonFormatter,
    RequestLog,
    log_request,
    request_id_var,
)
from app.core.metrics import HTTP_REQUEST_SECONDS, HTTP_REQUESTS, REQUEST_BUCKETS, RequestMetrics
from tests.conftest import (
    PASSWORD,
    add_user,
    asgi_client,
    bearer,
    is_postgres,
    login,
    new_database,
    run_server,
    user_payload,
)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


async def test_request_id_is_generated_or_kept_when_safe(client: httpx.AsyncClient) -> None:
    generated = (await client.get("/healthz")).headers["X-Request-ID"]
    assert len(generated) == 32
    assert generated != (await client.get("/healthz")).headers["X-Request-ID"]
    kept = await client.get("/healthz", headers={"X-Request-ID": "lb-7f3a.42:1"})
    assert kept.headers["X-Request-ID"] == "lb-7f3a.42:1"
    for unsafe in ("a" * 65, "two words", "<script>", ""):
        replaced = await client.get("/healthz", headers={"X-Request-ID": unsafe})
        assert replaced.headers["X-Request-ID"] != unsafe
        assert len(replaced.headers["X-Request-ID"]) == 32


async def test_metrics_count_requests_by_route_and_logins_by_outcome(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    before = (await client.get("/metrics")).text
    await add_user(app)
    token = await login(client)
    wrong = {"username": "alice", "password": "not-the-password"}
    assert (await client.post("/api/v1/auth/token", json=wrong)).status_code == 401
    for _ in range(3):
        assert (await client.get("/api/v1/users/profile", headers=bearer(token))).status_code == 200
    assert (await client.get("/api/v1/users/12345")).status_code == 401
    assert (await client.get("/no/such/path")).status_code == 404
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    after = response.text

    def grew(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert grew("userservice_logins_total", outcome="succeeded") == 1
    assert grew("userservice_logins_total", outcome="failed") == 1
    profile = {"route": "/api/v1/users/profile", "method": "GET"}
    assert grew("userservice_http_requests_total", status="200", **profile) == 3
    assert grew("userservice_http_request_duration_seconds_count", **profile) == 3
    # Route templates, not paths: label values stay few whatever clients send.
    assert grew("userservice_http_requests_total", route="/api/v1/users/{user_id}", method="GET",
                status="401") == 1  # fmt: skip
    assert grew("userservice_http_requests_total", route="<unmatched>", method="GET",
                status="404") == 1  # fmt: skip
    assert "/no/such/path" not in after
    assert ("userservice_db_pool_connections_in_use", ()) in samples(after)


async def test_throttled_logins_are_counted(client: httpx.AsyncClient) -> None:
    before = (await client.get("/metrics")).text
    wrong = {"username": "nobody", "password": "not-the-password"}
    statuses = [(await client.post("/api/v1/auth/token", json=wrong)).status_code for _ in range(6)]
    assert statuses[-1] == 429
    after = (await client.get("/metrics")).text
    throttled = sample(after, "userservice_logins_total", outcome="throttled") - sample(
        before, "userservice_logins_total", outcome="throttled"
    )
    assert throttled == statuses.count(429)


def _log_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


@pytest.mark.slow
def test_server_logs_json_without_secrets_and_sums_metrics_over_workers(
    database_url: str, tmp_path: Path
) -> None:
    """Two workers (multiprocess metrics); the log captured from the server's stdout."""
    wrong_password = "Wrong-passphrase-99"
    with (
        run_server(database_url, tmp_path, workers=2, LOG_LEVEL="INFO") as base_url,
        httpx.Client(base_url=base_url, timeout=30) as client,
    ):
        assert client.post("/api/v1/auth/register", json=user_payload()).status_code == 201
        tokens = client.post(
            "/api/v1/auth/token", json={"username": "alice", "password": PASSWORD}
        ).json()
        failed = client.post(
            "/api/v1/auth/token", data={"username": "alice", "password": wrong_password}
        )
        assert failed.status_code == 401
        refreshed = client.post(
            "/api/v1/auth/token/refresh", json={"refresh_token": tokens["refresh_token"]}
        ).json()
        profile = client.get(
            "/api/v1/users/profile",
            headers={**bearer(refreshed["access_token"]), "X-Request-ID": "trace-profile-1"},
        )
        assert profile.status_code == 200
        user_id = profile.json()["id"]
        metrics_text = client.get("/metrics").text
        # Whichever worker answered the scrape, it reports the logins of both.
        assert sample(metrics_text, "userservice_logins_total", outcome="succeeded") == 1
        assert sample(metrics_text, "userservice_logins_total", outcome="failed") == 1
    log_path = next(tmp_path.glob("server-*.log"))
    text = log_path.read_text()
    secrets = [PASSWORD, wrong_password, "Bearer", "bearer"]
    secrets += [tokens["access_token"], tokens["refresh_token"]]
    secrets += [refreshed["access_token"], refreshed["refresh_token"]]
    for secret in secrets:
        assert secret not in text, f"{secret[:12]}... is in the log"

    requests = [line for line in _log_lines(log_path) if line["logger"] == "app.requests"]
    (line,) = [line for line in requests if line.get("request_id") == "trace-profile-1"]
    assert line["method"] == "GET"
    assert line["route"] == "/api/v1/users/profile"
    assert line["status"] == 200
    assert line["user_id"] == user_id
    assert isinstance(line["duration_ms"], float | int)
    assert {"time", "level", "message"} <= set(line)
    statuses = {(entry["route"], entry["status"]) for entry in requests}
    assert {("/api/v1/auth/token", 200), ("/api/v1/auth/token", 401)} <= statuses
    assert ("/api/v1/auth/token/refresh", 200) in statuses
    assert not any(' - "' in raw for raw in text.splitlines())  # no uvicorn access lines


async def _refuse_new_users(database_url: str) -> None:
    """Make every INSERT INTO users fail in the database, after the row is built: PostgreSQL
    then quotes the whole row (its password hash) in the error's DETAIL."""
    statement = (
        "ALTER TABLE users ADD CONSTRAINT refuse_new_rows CHECK (false) NOT VALID"
        if is_postgres(database_url)
        else "CREATE TRIGGER refuse_new_rows BEFORE INSERT ON users "
        "BEGIN SELECT RAISE(ABORT, 'refused'); END"
    )
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_database_errors_are_logged_without_the_values(backend: str, tmp_path: Path) -> None:
    """An unexpected database error on registration (a 500) is logged with its traceback and
    SQL, never with the password hash it was writing (SQL parameters, PostgreSQL's DETAIL)."""
    with (
        new_database(backend, tmp_path) as database_url,
        run_server(database_url, tmp_path) as base_url,
    ):
        asyncio.run(_refuse_new_users(database_url))
        response = httpx.post(f"{base_url}/api/v1/auth/register", json=user_payload())
        assert response.status_code == 500
        assert response.json()["code"] == "internal_error"
    log_path = next(tmp_path.glob("server-*.log"))
    text = log_path.read_text()
    (error,) = [line for line in _log_lines(log_path) if line["logger"] == "app.errors"]
    assert "IntegrityError" in error["exc_info"]
    assert "INSERT INTO users" in error["exc_info"]
    assert "$argon2id$" not in text  # no password hash, in any line
    assert PASSWORD not in text


class BlockedStream(io.StringIO):
    """Standard output that takes no line until ``release`` is set (a full pipe)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def write(self, text: str) -> int:
        self.release.wait(10)
        return super().write(text)


def _json_handler(stream: io.StringIO, max_backlog: int = 100) -> BackgroundStreamHandler:
    handler = BackgroundStreamHandler(stream, max_backlog=max_backlog)
    handler.setFormatter(JsonFormatter())
    return handler


def test_a_blocked_standard_output_does_not_block_the_logging_caller() -> None:
    stream = BlockedStream()
    handler = _json_handler(stream, max_backlog=5)
    logger = logging.getLogger("tests.blocked")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        started = time.monotonic()
        for number in range(20):
            token = request_id_var.set(f"req-{number}")
            logger.warning("line %d", number)
            request_id_var.reset(token)
        assert time.monotonic() - started < 1  # the writer thread waits, not the caller
        assert stream.getvalue() == ""
        stream.release.set()
        handler.flush()
        lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        logger.removeHandler(handler)
        handler.close()
    # the first record is being written while the next five wait; the rest are counted
    kept = [line for line in lines if line["logger"] == "tests.blocked"]
    assert [line["message"] for line in kept] == [f"line {n}" for n in range(len(kept))]
    assert [line["request_id"] for line in kept] == [f"req-{n}" for n in range(len(kept))]
    (dropped,) = [line for line in lines if line["logger"] == "app.core.logging"]
    assert dropped["message"] == f"{20 - len(kept)} log records dropped"
    assert "request_id" not in dropped


def test_the_writer_writes_what_is_queued_before_close() -> None:
    stream = io.StringIO()
    handler = _json_handler(stream)
    record = logging.LogRecord("tests.close", logging.INFO, __file__, 1, "a %s", ("b",), None)
    handler.handle(record)
    handler.close()
    (line,) = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert (line["message"], line["level"]) == ("a b", "INFO")


def test_request_metrics_expose_what_prometheus_client_metrics_expose() -> None:
    """`RequestMetrics` (plain numbers, exported when scraped) against the library's own
    Counter and Histogram fed the same requests: the same exposition, but the times of the
    ``_created`` samples."""
    requests = [
        ("/healthz", "GET", 200, 0.001),
        ("/healthz", "GET", 200, 0.005),  # on a bound: counted in it (le)
        ("/api/v1/auth/register", "POST", 422, 0.3),
        ("/healthz", "GET", 500, 31.0),  # past the last bound: +Inf only
        ("/api/v1/auth/register", "POST", 201, 0.0),
        ("/healthz", "GET", 200, 2.5),
    ]
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    collector = RequestMetrics(REQUEST_BUCKETS)
    ours.register(collector)
    counter = Counter(*HTTP_REQUESTS, ["route", "method", "status"], registry=theirs)
    histogram = Histogram(
        *HTTP_REQUEST_SECONDS, ["route", "method"], buckets=REQUEST_BUCKETS, registry=theirs
    )
    for route, method, status, seconds in requests:
        collector.observe(route, method, status, seconds)
        counter.labels(route, method, str(status)).inc()
        histogram.labels(route, method).observe(seconds)

    def exposition(registry: CollectorRegistry) -> list[str]:
        text = generate_latest(registry).decode()
        return [re.sub(r"(_created\{.*\}) \S+$", r"\1 T", line) for line in text.splitlines()]

    assert exposition(ours) == exposition(theirs)
    assert any(line.startswith("userservice_http_requests_created{") for line in exposition(ours))


def _without_time(line: str) -> str:
    return re.sub(r'"time": "[^"]*"', '"time": ""', line, count=1)


def test_request_lines_written_directly_are_the_lines_of_their_records() -> None:
    """`RequestLog` writes the line itself only where the record would reach one JSON
    handler; the line is the one that handler writes for the record `log_request` makes,
    and with a second handler (a capture) the record is made and reaches both."""
    stream = io.StringIO()
    handler = _json_handler(stream)
    parent = logging.getLogger("tests.request_log")
    parent.addHandler(handler)
    parent.propagate = False
    parent.setLevel(logging.INFO)
    request_log = RequestLog(logging.getLogger("tests.request_log.requests"))
    line = ("0123abcd", "GET", "/api/v1/users/profile", 200, 1.23, 42)
    captured: list[logging.LogRecord] = []
    capture = logging.Handler()
    capture.emit = captured.append  # type: ignore[method-assign,assignment]
    before = datetime.now(UTC).replace(microsecond=0)
    try:
        request_log.write(*line)
        handler.flush()
        assert captured == []
        parent.addHandler(capture)
        token = request_id_var.set("0123abcd")  # as RequestMiddleware has it while it logs
        try:
            request_log.write(*line)
        finally:
            request_id_var.reset(token)
        handler.flush()
    finally:
        parent.removeHandler(handler)
        parent.removeHandler(capture)
        handler.close()
    direct, from_record = stream.getvalue().splitlines()
    assert _without_time(direct) == _without_time(from_record)
    assert json.loads(direct) | {"time": None} == {
        "time": None,
        "level": "INFO",
        "logger": "tests.request_log.requests",
        "message": "GET /api/v1/users/profile 200",
        "request_id": "0123abcd",
        "method": "GET",
        "route": "/api/v1/users/profile",
        "status": 200,
        "duration_ms": 1.23,
        "user_id": 42,
    }
    assert datetime.fromisoformat(json.loads(direct)["time"]) >= before
    (record,) = captured
    assert record.fields["user_id"] == 42  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "created", [0.0, 1_764_460_000.0, 1_764_460_000.123456, 1_764_460_000.9996, 1_764_460_001.5]
)
def test_log_times_are_iso_with_milliseconds(created: float) -> None:
    record = logging.LogRecord("tests.time", logging.INFO, __file__, 1, "x", None, None)
    record.created = created
    expected = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
    formatter = JsonFormatter()
    assert json.loads(formatter.format(record))["time"] == expected
    assert json.loads(formatter.format(record))["time"] == expected  # from the cached second


async def test_headers_the_app_set_are_replaced_not_doubled(fresh_app: FastAPI) -> None:
    async def own_headers() -> Response:
        return Response(b"{}", headers={"Cache-Control": "public", "X-Request-ID": "mine"})

    fresh_app.add_api_route("/api/v1/own-headers", own_headers)
    async with asgi_client(fresh_app) as client:
        response = await client.get("/api/v1/own-headers", headers={"X-Request-ID": "theirs"})
    assert response.headers.get_list("cache-control") == ["no-store"]
    assert response.headers.get_list("x-request-id") == ["theirs"]
    assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    ("request_id", "route", "duration_ms", "user_id"),
    [
        ("0123abcd", "/api/v1/users/profile", 1.23, 42),
        (None, "<unmatched>", 0.0, None),
        ("id", '/pages/\u00e9t\u00e9/"q"\\', 1e-05, None),
        ("id", "/healthz", 12345.67, 2**63),
        ("id", "/healthz", float("nan"), None),  # not JSON's: json.dumps's NaN
        ("id", "/healthz", 1.5, "not-an-int"),  # written by json.dumps
    ],
)
def test_request_lines_are_written_as_json_dumps_writes_them(
    request_id: str | None, route: str, duration_ms: float, user_id: object
) -> None:
    records: list[logging.LogRecord] = []
    logger = logging.getLogger("tests.request_lines")
    logger.handle = records.append  # type: ignore[method-assign,assignment]
    log_request(logger, "GET", route, 200, duration_ms, user_id)  # type: ignore[arg-type]
    (record,) = records
    record.request_id = request_id
    direct = JsonFormatter().format(record)
    delattr(record, "request_line")
    assert direct == JsonFormatter().format(record)
    assert json.loads(direct)["route"] == route
