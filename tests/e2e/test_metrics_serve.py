"""GET /metrics and /health's lag on the real thing (issue 18, point 1): a real ``timeline
serve`` reading a real Redis stream, scraped over HTTP and parsed with Prometheus' own parser."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from e2e_support import Server, report_event, settle, store_counts
from projections.engine import projection_path

pytestmark = pytest.mark.e2e

TOKEN = "metrics-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def scrape(server: Server, headers: dict[str, str] | None = None) -> dict[str, dict[tuple[Any, ...], float]]:
    response = httpx.get(f"{server.base_url}/metrics", headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    samples: dict[str, dict[tuple[Any, ...], float]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def by_label(samples: dict[tuple[Any, ...], float], label: str) -> dict[str, float]:
    return {dict(labels)[label]: value for labels, value in samples.items()}


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout} s (last: {last!r})")


def test_metrics_count_what_was_done_and_need_the_token_when_told(
    serve, redis_client: redis.Redis, stream_name: str
) -> None:
    server = serve(token=TOKEN, TIMELINE_METRICS_REQUIRE_TOKEN="true")
    valid, bad = 60, {"bad_json": 3, "no_event": 2, "schema": 4}
    with redis_client.pipeline(transaction=False) as pipe:
        for i in range(valid):
            pipe.xadd(stream_name, {"event": json.dumps(report_event(i, prefix="m"))})
        for i in range(bad["bad_json"]):
            pipe.xadd(stream_name, {"event": b"{not json " + str(i).encode()})
        for i in range(bad["no_event"]):
            pipe.xadd(stream_name, {"body": f"no event field {i}"})
        for i in range(bad["schema"]):
            pipe.xadd(stream_name, {"event": json.dumps(report_event(i, prefix="s", kind="rumour"))})
        pipe.xadd(stream_name, {"event": json.dumps(report_event(0, prefix="m"))})  # a duplicate: not counted
        pipe.execute()
    projections = settle(server, redis_client, timeout=120)

    assert httpx.get(f"{server.base_url}/metrics", timeout=30).status_code == 401
    assert httpx.get(f"{server.base_url}/metrics", headers={"Authorization": "Bearer x"}, timeout=30).status_code == 401
    samples = scrape(server, AUTH)

    assert samples["timeline_events_stored_total"] == {(): float(valid)}
    assert by_label(samples["timeline_dead_letters_total"], "reason") == {
        "no_event": 2.0, "too_large": 0.0, "bad_json": 3.0, "schema": 4.0, "id_conflict": 0.0
    }
    count, _, _, head = store_counts(server.db)
    assert count == head == valid
    assert samples["timeline_store_head"] == {(): float(head)}
    positions = by_label(samples["timeline_projection_position"], "projection")
    assert positions == {p["name"]: float(head) for p in projections}
    assert set(by_label(samples["timeline_projection_lag_events"], "projection").values()) == {0.0}
    assert set(by_label(samples["timeline_projection_lag_seconds"], "projection").values()) == {0.0}
    assert samples["timeline_stream_pending"] == {(): 0.0} and samples["timeline_stream_lag"] == {(): 0.0}
    assert samples["timeline_append_seconds_count"][()] > 0
    assert samples["timeline_append_seconds_sum"][()] > 0
    http = samples["timeline_http_request_duration_seconds_count"]
    routes = {(dict(labels)["route"], dict(labels)["method"], dict(labels)["status"]) for labels in http}
    assert ("/health", "GET", "200") in routes and ("/projections", "GET", "200") in routes
    assert ("/metrics", "GET", "401") in routes


def test_health_tells_a_lagging_projection_from_a_stuck_one(
    serve, redis_client: redis.Redis, stream_name: str
) -> None:
    server = serve(TIMELINE_STUCK_SECONDS="3")
    redis_client.xadd(stream_name, {"event": json.dumps(report_event(0, prefix="h"))})
    settle(server, redis_client, timeout=60)
    health = httpx.get(f"{server.base_url}/health", timeout=30).json()
    assert health["stuck"] == [] and health["lag"]["stream"]["progress"] == "caught_up"
    assert {p["progress"] for p in health["lag"]["projections"].values()} == {"caught_up"}

    # Another process holds the write lock of the timelines projection's file: its projector waits.
    holder = sqlite3.connect(projection_path(server.db, "timelines"), timeout=30, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        for i in range(1, 6):
            redis_client.xadd(stream_name, {"event": json.dumps(report_event(i, prefix="h"))})

        def lagging() -> Any:
            body = httpx.get(f"{server.base_url}/health", timeout=30).json()
            timelines = body["lag"]["projections"]["timelines"]
            return body if timelines["lag_events"] == 5 and timelines["progress"] == "lagging" else None

        body = wait_for(lagging, 20, "timelines lagging")
        assert body["status"] == "ok" and body["stuck"] == []
        assert body["lag"]["stream"]["pending"] == 0  # the stream is stored; only the projection waits

        def stuck() -> Any:
            body = httpx.get(f"{server.base_url}/health", timeout=30).json()
            return body if "projection:timelines" in body["stuck"] else None

        body = wait_for(stuck, 20, "timelines stuck")
        timelines = body["lag"]["projections"]["timelines"]
        assert timelines["progress"] == "stuck" and timelines["lag_events"] == 5
        assert timelines["still_seconds"] >= 3 and timelines["seconds"] >= 3
        assert body["status"] == "ok"  # behind is not down: /health's status keeps its meaning
        samples = scrape(server)
        assert by_label(samples["timeline_projection_stuck"], "projection")["timelines"] == 1.0
        assert by_label(samples["timeline_projection_lag_events"], "projection")["timelines"] == 5.0
        assert by_label(samples["timeline_projection_lag_seconds"], "projection")["timelines"] >= 3
        # (the other projections may be held up too: a live step waits for every projection's batch)
    finally:
        holder.execute("ROLLBACK")
        holder.close()

    def recovered() -> Any:
        body = httpx.get(f"{server.base_url}/health", timeout=30).json()
        return body if body["stuck"] == [] and body["lag"]["projections"]["timelines"]["lag_events"] == 0 else None

    body = wait_for(recovered, 40, "timelines caught up")
    assert body["lag"]["projections"]["timelines"] == {
        "position": 6, "lag_events": 0, "seconds": 0.0, "progress": "caught_up", "still_seconds": 0.0
    }

    # Now the store's write lock is held: the consumer's append waits, its batch stays pending.
    holder = sqlite3.connect(server.db, timeout=30, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        for i in range(6, 9):
            redis_client.xadd(stream_name, {"event": json.dumps(report_event(i, prefix="h"))})

        def stream_stuck() -> Any:
            body = httpx.get(f"{server.base_url}/health", timeout=30).json()
            return body if "stream" in body["stuck"] else None

        body = wait_for(stream_stuck, 20, "the stream stuck")
        stream = body["lag"]["stream"]
        assert stream["progress"] == "stuck" and stream["pending"] + stream["undelivered"] == 3
        assert stream["seconds"] >= 3 and body["backlog"] == 3
        samples = scrape(server)
        assert samples["timeline_stream_stuck"] == {(): 1.0}
        assert samples["timeline_stream_lag_seconds"][()] >= 3
        assert samples["timeline_stream_pending"][()] + samples["timeline_stream_lag"][()] == 3
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    body = wait_for(recovered, 40, "the stream stored again")
    settle(server, redis_client, timeout=60)
    body = httpx.get(f"{server.base_url}/health", timeout=30).json()
    assert body["stuck"] == [] and body["lag"]["stream"]["progress"] == "caught_up"
    assert scrape(server)["timeline_events_stored_total"] == {(): 9.0}
