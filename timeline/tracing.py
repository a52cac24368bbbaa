"""Optional OpenTelemetry tracing: set ``TIMELINE_OTLP_ENDPOINT`` (needs the ``[otel]`` extra).

Off by default, and then this module is not even imported (``Runtime`` imports it only when the
setting is set). On, three kinds of span go to the OTLP/HTTP endpoint:

- the API's: one server span per request (opentelemetry-instrumentation-fastapi);
- the consumer's: one ``process`` span per stream batch read (FastStream's
  ``RedisTelemetryMiddleware``), one ``claim`` span per batch taken over from another consumer;
- the store's: one ``store append`` span per batch appended, a child of the batch's span.

``POST /events`` writes the W3C ``traceparent`` of its request span on each stream entry it
publishes, as a field beside ``event`` (the consumer reads only ``event``; other fields are
allowed). The consumer hands the batch's ``traceparent`` to FastStream as the message's headers:
when every entry of a batch that carries one carries the same (a POST's events, read together),
the batch's span is a child of the POST's, in the same trace; when a batch mixes several
requests' entries, its span starts a trace of its own and links to each (OpenTelemetry's rule for
batches: a span has one parent).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from faststream.redis.opentelemetry import RedisTelemetryMiddleware
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from events.store import AppendDone

SERVICE_NAME = "news-timeline"
TRACEPARENT = "traceparent"
EXCLUDED_URLS = r"/health(\?|$),/metrics(\?|$)"  # regular expressions searched in the URL
_PROPAGATOR = TraceContextTextMapPropagator()


class Tracing:
    """One runtime's tracer provider and what it instruments."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("timeline")

    @classmethod
    def exporting(cls, exporter: SpanExporter) -> "Tracing":
        provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
        provider.add_span_processor(BatchSpanProcessor(exporter))
        return cls(provider)

    @classmethod
    def to_endpoint(cls, endpoint: str) -> "Tracing":
        """Spans sent in batches to an OTLP/HTTP collector (e.g. ``http://otel:4318/v1/traces``)."""
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return cls.exporting(OTLPSpanExporter(endpoint=endpoint))

    def instrument(self, app: FastAPI) -> None:
        """Every request a server span, but the probes' (``/health``, ``/metrics``): polled every
        few seconds, they would fill the traces with nothing."""
        FastAPIInstrumentor.instrument_app(app, tracer_provider=self.provider, excluded_urls=EXCLUDED_URLS)

    def broker_middleware(self) -> RedisTelemetryMiddleware:
        return RedisTelemetryMiddleware(tracer_provider=self.provider, include_messages_counters=False)

    @contextmanager
    def claim_span(self, stream: str, data: list[dict[bytes, bytes]]) -> Iterator[None]:
        """The span of a batch taken over from another consumer (the claimer reads no message
        through FastStream): a child of the one ``traceparent`` its entries carry, else linked to
        each, like FastStream's ``process`` spans (``batch_headers``)."""
        headers = batch_headers(data)
        carriers = [headers["headers"]] if "headers" in headers else headers["batch_headers"]
        contexts = [_PROPAGATOR.extract(carrier) for carrier in carriers]
        parent = contexts[0] if len(contexts) == 1 else None
        links = [trace.Link(trace.get_current_span(c).get_span_context()) for c in contexts] if parent is None else []
        with self.tracer.start_as_current_span(
            f"{stream} claim", context=parent, kind=trace.SpanKind.CONSUMER, links=links,
            attributes={"messaging.system": "redis", "messaging.batch.message_count": len(data)},
        ):
            yield

    def entry_fields(self) -> dict[str, str]:
        """The current span's ``traceparent``, as fields for a stream entry ({} outside a span)."""
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier)
        return {TRACEPARENT: carrier[TRACEPARENT]} if TRACEPARENT in carrier else {}

    def appended(self, done: AppendDone) -> None:
        """The store's observer: the append as a span, in the context it ran in."""
        span = self.tracer.start_span(
            "store append", start_time=done.started_ns,
            attributes={"timeline.batch.size": done.batch, "timeline.batch.stored": done.stored},
        )
        span.end(end_time=done.started_ns + int(done.seconds * 1e9))

    def shutdown(self) -> None:
        """Send what is buffered, then stop."""
        self.provider.shutdown()


def batch_headers(data: list[dict[bytes, bytes]]) -> dict[str, Any]:
    """FastStream message headers for a batch of stream entries: ``headers`` with the one
    ``traceparent`` its entries carry, or ``batch_headers`` (one per distinct ``traceparent``, for
    FastStream to link) when they carry several."""
    parents = sorted({fields[b"traceparent"] for fields in data if fields and b"traceparent" in fields})
    if len(parents) == 1:
        return {"headers": {TRACEPARENT: parents[0].decode("ascii", "replace")}}
    return {
        "batch_headers": [
            {TRACEPARENT: p.decode("ascii", "replace"), "correlation_id": p.decode("ascii", "replace")} for p in parents
        ]
    }

