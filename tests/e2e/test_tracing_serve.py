"""TIMELINE_OTLP_ENDPOINT on the real thing (issue 18): ``timeline serve`` sends its spans over
OTLP/HTTP to a stand-in collector (an HTTP server in the test that decodes what it is sent with
the OTLP protobuf definitions): a POST, its batch and its append in one trace."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import redis
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from e2e_support import report_event, settle

pytestmark = pytest.mark.e2e


class Collector(BaseHTTPRequestHandler):
    received: list[tuple[str, ExportTraceServiceRequest]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["content-length"]))
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        self.received.append((self.path, request))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[tuple[str, list[tuple[str, ExportTraceServiceRequest]]]]:
    received: list[tuple[str, ExportTraceServiceRequest]] = []
    handler = type("Handler", (Collector,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces", received
    finally:
        server.shutdown()
        server.server_close()


def test_serve_sends_a_post_its_batch_and_its_append_as_one_trace(
    serve, redis_client: redis.Redis, collector: tuple[str, list[tuple[str, ExportTraceServiceRequest]]]
) -> None:
    endpoint, received = collector
    server = serve(TIMELINE_OTLP_ENDPOINT=endpoint)
    answer = httpx.post(f"{server.base_url}/events", params={"wait": "true"},
                        json=[report_event(i, prefix="otlp") for i in range(3)], timeout=60)
    assert answer.status_code == 201, answer.text
    settle(server, redis_client, timeout=60)
    assert server.terminate() == 0  # a clean stop sends what is buffered
    spans = [
        (resource.resource, span)
        for path, request in received
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    assert {path for path, _ in received} == {"/v1/traces"}
    names = {attr.value.string_value for resource, _ in spans for attr in resource.attributes
             if attr.key == "service.name"}
    assert names == {"news-timeline"}
    (post,) = [s for _, s in spans if s.name == "POST /events"]
    in_trace = [s for _, s in spans if s.trace_id == post.trace_id]
    batches = {s.span_id: s for s in in_trace if s.name.endswith(" process")}
    assert batches and all(b.parent_span_id == post.span_id for b in batches.values())
    appends = [s for s in in_trace if s.name == "store append"]
    assert appends and all(a.parent_span_id in batches for a in appends)
    stored = sum(attr.value.int_value for a in appends for attr in a.attributes if attr.key == "timeline.batch.stored")
    assert stored == 3
