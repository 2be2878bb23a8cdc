"""Prometheus metrics, served at ``GET /metrics``.

With several worker processes (``serve --workers N``) each process writes its samples to
files under ``PROMETHEUS_MULTIPROC_DIR`` and a scrape of any worker aggregates them all
(prometheus-client's multiprocess mode). The variable must be set before this module is
imported: ``python -m app serve`` sets it to a fresh temporary directory when N > 1.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
UNMATCHED_ROUTE = "<unmatched>"  # one label for every path no route matched (bounded)

HTTP_REQUESTS = Counter(
    "userservice_http_requests_total",
    "HTTP requests answered, by route template, method and status.",
    ["route", "method", "status"],
)
HTTP_REQUEST_SECONDS = Histogram(
    "userservice_http_request_duration_seconds",
    "Time from the request to the end of the response, by route template and method.",
    ["route", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
LOGINS = Counter(
    "userservice_logins_total",
    "Login attempts by outcome: succeeded, failed (bad credentials), throttled.",
    ["outcome"],
)
DB_POOL_IN_USE = Gauge(
    "userservice_db_pool_connections_in_use",
    "Database connections checked out of the pool (summed over live worker processes).",
    multiprocess_mode="livesum",
)

EMAILS = Counter(
    "userservice_emails_total",
    "Email delivery attempts by kind and outcome: sent (the backend took it), retried (an "
    "attempt failed; another is scheduled), failed (given up: a day of retries, or refused "
    "for good), discarded (EMAIL_BACKEND=off).",
    ["kind", "outcome"],
)
EMAIL_OUTBOX_BACKLOG = Gauge(
    "userservice_email_outbox_backlog",
    "Emails waiting in the outbox (pending rows, as the relay last counted them).",
    # Every process counts the same table: the latest count is the answer, not their sum.
    multiprocess_mode="livemostrecent",
)

LoginOutcome = Literal["succeeded", "failed", "throttled"]
EmailOutcome = Literal["sent", "retried", "failed", "discarded"]


def record_login(outcome: LoginOutcome) -> None:
    LOGINS.labels(outcome).inc()


def record_email(kind: str, outcome: EmailOutcome) -> None:
    EMAILS.labels(kind, outcome).inc()


def set_email_backlog(count: int) -> None:
    EMAIL_OUTBOX_BACKLOG.set(count)


# The request metrics' children by (route, method, status): looked up once, not at every
# request (``labels`` converts and checks the values and takes a lock). As bounded as the
# labels: route templates, methods, statuses.
_REQUEST_CHILDREN: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def observe_request(route: str, method: str, status: int, seconds: float) -> None:
    try:
        counter, histogram = _REQUEST_CHILDREN[route, method, status]
    except KeyError:
        counter = HTTP_REQUESTS.labels(route, method, str(status))
        histogram = HTTP_REQUEST_SECONDS.labels(route, method)
        _REQUEST_CHILDREN[route, method, status] = counter, histogram
    counter.inc()
    histogram.observe(seconds)


def track_pool(engine: AsyncEngine) -> None:
    """Keep `DB_POOL_IN_USE` at the pool's checked-out count as connections come and go."""
    pool = engine.sync_engine.pool

    def update(*_args: Any) -> None:
        checkedout = getattr(pool, "checkedout", None)
        if callable(checkedout):
            DB_POOL_IN_USE.set(checkedout())

    event.listen(pool, "checkout", update)
    event.listen(pool, "checkin", update)
    update()


def render() -> tuple[bytes, str]:
    """The exposition text of this process, or of every worker in multiprocess mode."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
