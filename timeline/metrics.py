"""Prometheus metrics: ``GET /metrics`` in the standard text exposition format.

Counters and histograms are this process's (they start at zero with it): events stored (by any
append of the service's store), dead letters written (by reason), the time of each batch's append,
and the time of each HTTP request by route *template* (``/entities/{entity_id}``, never the raw
path; a path no route matches is ``unmatched``, a method outside the usual ones ``other``: the
label sets are bounded whatever clients send). Gauges are read when scraped, from the projections'
checkpoints and the consumer group's summary (``Runtime.observe``: the same look /health takes,
cached like it; no stream entry is read but at most the oldest one not yet delivered).

Each runtime has a registry of its own (not prometheus_client's global one), so several apps in
one process do not share or collide. ``timeline serve`` runs the API, the consumer and the
projections in one process, so one scrape sees all of it (docs/operations.md).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.params import Depends
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from events.store import AppendDone

from .lag import STUCK, Observation

if TYPE_CHECKING:
    from .runtime import Runtime
    from .service import DeadLetter

DEAD_LETTER_REASONS = ("no_event", "too_large", "bad_json", "schema", "id_conflict")  # docs/contract.md §3
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"
APPEND_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """One runtime's counters and histograms, and its ``/metrics`` text."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.registry = CollectorRegistry()
        self.events_stored = Counter(
            "timeline_events_stored", "Events appended to the store by this process", registry=self.registry
        )
        self.dead_letters = Counter(
            "timeline_dead_letters", "Dead letters written by this process, by reason", ["reason"],
            registry=self.registry,
        )
        for reason in DEAD_LETTER_REASONS:  # every reason present from the start, at 0
            self.dead_letters.labels(reason)
        self.append_seconds = Histogram(
            "timeline_append_seconds", "Time to append one batch to the store (one transaction)",
            buckets=APPEND_BUCKETS, registry=self.registry,
        )
        self.http_seconds = Histogram(
            "timeline_http_request_duration_seconds", "HTTP requests by route template, method and status",
            ["route", "method", "status"], buckets=HTTP_BUCKETS, registry=self.registry,
        )

    def appended(self, done: AppendDone) -> None:
        """The store's observer (``EventStore.observers``): on the appending thread, after commit."""
        self.append_seconds.observe(done.seconds)
        if done.stored:
            self.events_stored.inc(done.stored)

    def dead_lettered(self, letters: Sequence[DeadLetter]) -> None:
        for letter in letters:
            self.dead_letters.labels(letter.reason).inc()

    async def exposition(self) -> bytes:
        """The counters and histograms, then the gauges of a fresh look (``Runtime.observe``)."""
        gauges = CollectorRegistry()
        gauges.register(ObservationCollector(await self.runtime.observe()))
        return generate_latest(self.registry) + generate_latest(gauges)


class ObservationCollector(Collector):
    """The gauges of one ``Observation``: the stream's backlog and each projection's lag."""

    def __init__(self, observation: Observation) -> None:
        self.observation = observation

    def collect(self) -> Iterator[Metric]:
        yield from self._stream()
        yield from self._projections()

    def _stream(self) -> Iterator[Metric]:
        backlog, judged = self.observation.backlog, self.observation.stream
        if backlog is None or judged is None:  # no consumer, or Redis not answering: absent, not 0
            return
        yield GaugeMetricFamily(
            "timeline_stream_pending", "Entries delivered to the group and not yet acknowledged", value=backlog.pending
        )
        yield GaugeMetricFamily(
            "timeline_stream_lag", "Entries not yet delivered to the group (a lower bound past 10,000 on Redis < 7)",
            value=backlog.undelivered,
        )
        yield GaugeMetricFamily(
            "timeline_stream_lag_seconds", "Age of the oldest entry not yet stored (0 when none)", value=backlog.seconds
        )
        yield GaugeMetricFamily(
            "timeline_stream_stuck", "1 when entries wait and none was settled for TIMELINE_STUCK_SECONDS",
            value=float(judged.state == STUCK),
        )

    def _projections(self) -> Iterator[Metric]:
        families = {
            "position": ("timeline_projection_position", "Last store position the projection applied"),
            "lag_events": ("timeline_projection_lag_events", "Store events the projection has not applied"),
            "lag_seconds": ("timeline_projection_lag_seconds", "Age of the oldest event not yet applied (0 when none)"),
            "rebuild": ("timeline_rebuild_progress", "Share of the store a running rebuild has applied (1: none runs)"),
            "stuck": ("timeline_projection_stuck", "1 when behind and not moved for TIMELINE_STUCK_SECONDS"),
        }
        gauges = {key: GaugeMetricFamily(name, text, labels=["projection"]) for key, (name, text) in families.items()}
        head = None
        for lag, judged in self.observation.projections:
            values = {
                "position": lag.position, "lag_events": lag.lag_events, "lag_seconds": lag.lag_seconds,
                "rebuild": lag.rebuild_progress, "stuck": float(judged.state == STUCK),
            }
            for key, value in values.items():
                gauges[key].add_metric([lag.name], value)
            head = lag.head
        yield from gauges.values()
        if head is not None:
            yield GaugeMetricFamily("timeline_store_head", "The store's last position", value=head)


class HttpMetrics:
    """ASGI middleware: each HTTP request's duration by route template, method and status."""

    def __init__(self, app: ASGIApp, histogram: Histogram) -> None:
        self.app = app
        self.histogram = histogram
        self._series: dict[tuple[str, str, int], Any] = {}  # bounded: the labels are (see the module)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless the app starts an answer: an exception becomes the server's 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self._series_for(route_label(scope), method_label(scope), status).observe(time.perf_counter() - started)

    def _series_for(self, route: str, method: str, status: int) -> Any:
        key = (route, method, status)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = self.histogram.labels(route, method, str(status))
        return series


def route_label(scope: Scope) -> str:
    """The template of the route that matched (set in the scope by the router), else ``unmatched``."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) and path else UNMATCHED


def method_label(scope: Scope) -> str:
    method = scope.get("method", "")
    return method if method in METHODS else "other"


def install(app: FastAPI, runtime: Runtime, dependencies: list[Depends]) -> None:
    """Time every request and answer ``GET /metrics`` (behind ``dependencies``: the token when
    ``TIMELINE_METRICS_REQUIRE_TOKEN`` is set)."""
    app.add_middleware(HttpMetrics, histogram=runtime.metrics.http_seconds)

    @app.get("/metrics", include_in_schema=False, dependencies=dependencies)
    async def metrics() -> Response:
        return Response(await runtime.metrics.exposition(), media_type=CONTENT_TYPE_PLAIN_0_0_4)  # the text format every Prometheus reads

