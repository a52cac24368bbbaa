"""OpenTelemetry tracing (issue 18): a POST, the consumer's batch and the store's append in one
trace, through a real Redis stream, with the SDK's in-memory exporter; and with
``TIMELINE_OTLP_ENDPOINT`` unset, nothing of it imported or installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import redis
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from timeline.api import create_app
from timeline.runtime import Runtime
from timeline.settings import Settings
from timeline.tracing import Tracing, batch_headers

ROOT = Path(__file__).resolve().parents[2]


def report(i: int) -> dict[str, object]:
    return {"id": f"t-{i}", "kind": "report", "occurred_at": "2025-05", "headline": f"Traced {i}",
            "entities": [{"name": "Somebody"}]}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, redis_url: str, stream_name: str) -> None:
    monkeypatch.setenv("TIMELINE_DB", str(tmp_path / "timeline.db"))
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("TIMELINE_STREAM", stream_name)
    monkeypatch.setenv("TIMELINE_VALIDATORS", "0")
    monkeypatch.delenv("TIMELINE_OTLP_ENDPOINT", raising=False)


async def test_a_post_its_batch_and_its_append_are_one_trace(
    env: None, redis_client: redis.Redis, stream_name: str
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    runtime = Runtime(Settings(), tracing=Tracing(provider))
    app = create_app(runtime, manage=False)
    async with runtime:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            answer = await http.post("/events", params={"wait": "true"}, json=[report(1), report(2)])
            assert answer.status_code == 201, answer.text
            assert (await http.get("/health")).status_code == 200
            assert (await http.get("/metrics")).status_code == 200
    spans = exporter.get_finished_spans()
    (post,) = [s for s in spans if s.kind == SpanKind.SERVER and s.name == "POST /events"]
    assert {s.name for s in spans if s.kind == SpanKind.SERVER} == {"POST /events"}  # not the probes
    trace_id = post.context.trace_id
    # the entries carry the POST's traceparent beside the event
    entries = redis_client.xrange(stream_name)
    parents = {fields[b"traceparent"].decode().rsplit("-", 1)[0] for _, fields in entries}
    assert parents == {f"00-{trace_id:032x}-{post.context.span_id:016x}"}  # then the flags
    # the consumer's span for the batch is the POST's child, the append the batch's child
    process = [s for s in spans if s.kind == SpanKind.CONSUMER and s.name.endswith("process")]
    # (the two entries may be read in one batch or two: each batch of them is the POST's child)
    batches = {s.context.span_id: s for s in process if s.context.trace_id == trace_id}
    assert batches and all(b.parent is not None and b.parent.span_id == post.context.span_id for b in batches.values())
    appends = [s for s in spans if s.name == "store append" and s.context.trace_id == trace_id]
    assert sum(a.attributes["timeline.batch.stored"] for a in appends) == 2
    for append in appends:
        assert append.parent is not None and append.parent.span_id in batches
        assert append.end_time > append.start_time >= batches[append.parent.span_id].start_time


async def test_a_batch_taken_over_from_a_dead_consumer_is_traced(
    env: None, monkeypatch: pytest.MonkeyPatch, redis_client: redis.Redis, stream_name: str
) -> None:
    """Entries a dead consumer left pending come back through the claimer, not FastStream: its
    ``claim`` span is the child of the ``traceparent`` they carry, their append its child."""
    monkeypatch.setenv("TIMELINE_CLAIM_IDLE_SECONDS", "0.2")
    parent = "00-" + "3" * 32 + "-" + "c" * 16 + "-01"
    redis_client.xgroup_create(stream_name, "store", id="0", mkstream=True)
    for i in range(3):
        redis_client.xadd(stream_name, {"event": json.dumps(report(i)), "traceparent": parent})
    assert len(redis_client.xreadgroup("store", "dead", {stream_name: ">"})[0][1]) == 3
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    runtime = Runtime(Settings(), tracing=Tracing(provider))
    async with runtime:
        consumer = runtime.consumer
        assert consumer is not None
        while consumer.entries < 3:
            await consumer.wait_for_change(1.0)
    assert int(redis_client.xpending(stream_name, "store")["pending"]) == 0
    spans = exporter.get_finished_spans()
    (claim,) = [s for s in spans if s.name == f"{stream_name} claim"]
    assert claim.kind == SpanKind.CONSUMER and claim.attributes["messaging.batch.message_count"] == 3
    assert claim.context.trace_id == int("3" * 32, 16) and claim.parent.span_id == int("c" * 16, 16)
    (append,) = [s for s in spans if s.name == "store append"]
    assert append.parent.span_id == claim.context.span_id and append.attributes["timeline.batch.stored"] == 3


def test_a_batch_of_several_requests_links_to_each() -> None:
    one = "00-" + "1" * 32 + "-" + "a" * 16 + "-01"
    two = "00-" + "2" * 32 + "-" + "b" * 16 + "-01"
    assert batch_headers([{b"event": b"{}", b"traceparent": one.encode()}, {b"event": b"{}"}]) == {
        "headers": {"traceparent": one}
    }
    mixed = batch_headers([{b"traceparent": one.encode()}, {b"traceparent": two.encode()}, {}])
    assert mixed == {"batch_headers": [{"traceparent": one, "correlation_id": one},
                                       {"traceparent": two, "correlation_id": two}]}
    assert batch_headers([{b"event": b"{}"}]) == {"batch_headers": []}


OFF = """
import asyncio, json, sys
from timeline.api import create_app
from timeline.runtime import Runtime
from timeline.settings import Settings

async def main():
    runtime = Runtime(Settings())
    app = create_app(runtime, manage=False)
    async with runtime:
        await runtime.publish([json.dumps({"id": "off-1", "kind": "report", "occurred_at": "2025",
                                           "headline": "h", "entities": [{"name": "n"}]}).encode()])
        middlewares = [m.cls.__name__ for m in app.user_middleware]
        broker = list(runtime.consumer.broker.middlewares)
    loaded = [m for m in sys.modules if m.startswith(("timeline.tracing", "opentelemetry.sdk.trace",
              "opentelemetry.instrumentation", "faststream.redis.opentelemetry", "faststream.opentelemetry",
              "opentelemetry.exporter"))]
    print(json.dumps({"loaded": loaded, "middlewares": middlewares, "broker": [type(m).__name__ for m in broker]}))

asyncio.run(main())
"""


def test_off_by_default_nothing_is_imported_or_installed(
    env: None, redis_client: redis.Redis, stream_name: str
) -> None:
    run = subprocess.run(
        [sys.executable, "-X", "faulthandler", "-c", OFF], capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert run.returncode == 0, run.stderr
    found = json.loads(run.stdout.strip().splitlines()[-1])
    assert found["loaded"] == []
    assert found["middlewares"] == ["HeadAsGet", "HttpMetrics"]  # no tracing middleware among them
    assert not any("Telemetry" in name for name in found["broker"])
    ((_, fields),) = redis_client.xrange(stream_name)
    assert set(fields) == {b"event"}  # no traceparent field when tracing is off
