"""Prometheus metrics, served at ``GET /metrics``.

With several worker processes (``serve --workers N``) each process writes its samples to
files under ``PROMETHEUS_MULTIPROC_DIR`` and a scrape of any worker aggregates them all
(prometheus-client's multiprocess mode). The variable must be set before this module is
imported: ``python -m app serve`` sets it to a fresh temporary directory when N > 1.
"""

from __future__ import annotations

import math
import os
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
from itertools import accumulate
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
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
UNMATCHED_ROUTE = "<unmatched>"  # one label for every path no route matched (bounded)

REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
HTTP_REQUESTS = (
    "userservice_http_requests_total",
    "HTTP requests answered, by route template, method and status.",
)
HTTP_REQUEST_SECONDS = (
    "userservice_http_request_duration_seconds",
    "Time from the request to the end of the response, by route template and method.",
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


class RequestMetrics(Collector):
    """The request counter and duration histogram of this process, kept as numbers in
    dicts and turned into metric families when scraped: the same samples as
    prometheus_client's Counter and Histogram (``_created`` included), without their lock
    per increment (three per request) and bucket loop. Only the event loop records (the
    request middleware) and a scrape copies before reading: no lock is needed."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.bounds = [
            floatToGoString(bound)  # type: ignore[no-untyped-call]
            for bound in (*buckets, math.inf)
        ]
        # (route, method, status) -> [count, created]
        self.requests: dict[tuple[str, str, int], list[float]] = {}
        # (route, method) -> [count per bucket (+Inf last), sum, created]
        self.durations: dict[tuple[str, str], list[float]] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        try:
            self.requests[route, method, status][0] += 1
        except KeyError:
            self.requests[route, method, status] = [1, time.time()]
        try:
            durations = self.durations[route, method]
        except KeyError:
            durations = [0] * (len(self.buckets) + 1) + [0.0, time.time()]
            self.durations[route, method] = durations
        durations[bisect_left(self.buckets, seconds)] += 1
        durations[-2] += seconds

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(*HTTP_REQUESTS, labels=("route", "method", "status"))
        with_created = _created_series()
        for (route, method, status), (count, created) in _snapshot(self.requests):
            requests.add_metric(
                (route, method, str(status)), count, created=created if with_created else None
            )
        yield requests
        durations = HistogramMetricFamily(*HTTP_REQUEST_SECONDS, labels=("route", "method"))
        for labels, counts in _snapshot(self.durations):
            *per_bucket, total, created = counts
            durations.add_metric(
                labels, list(zip(self.bounds, accumulate(per_bucket), strict=True)), total
            )
            if with_created:
                route, method = labels
                durations.samples.append(
                    Sample(f"{durations.name}_created", {"route": route, "method": method}, created)
                )
        yield durations


def _created_series() -> bool:
    # prometheus_client's own switch for the ``_created`` samples (metrics._get_use_created).
    disabled = os.environ.get("PROMETHEUS_DISABLE_CREATED_SERIES", "False")
    return disabled.lower() not in ("true", "1", "t")


def _snapshot(values: dict[Any, list[float]]) -> list[tuple[Any, list[float]]]:
    # dict() and list() copy in C without giving up the GIL: a consistent view.
    return [(key, list(value)) for key, value in dict(values).items()]


def _multiprocess_request_metrics() -> Callable[[str, str, int, float], None]:
    """With several workers the samples must live in prometheus_client's files, so the
    library's own metrics record them (their children looked up once per label set)."""
    counter = Counter(*HTTP_REQUESTS, ["route", "method", "status"])
    histogram = Histogram(*HTTP_REQUEST_SECONDS, ["route", "method"], buckets=REQUEST_BUCKETS)
    children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(route: str, method: str, status: int, seconds: float) -> None:
        try:
            count, duration = children[route, method, status]
        except KeyError:
            count = counter.labels(route, method, str(status))
            duration = histogram.labels(route, method)
            children[route, method, status] = count, duration
        count.inc()
        duration.observe(seconds)

    return observe


if os.environ.get(MULTIPROC_ENV):
    observe_request = _multiprocess_request_metrics()
else:
    _REQUEST_METRICS = RequestMetrics(REQUEST_BUCKETS)
    REGISTRY.register(_REQUEST_METRICS)
    observe_request = _REQUEST_METRICS.observe


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
