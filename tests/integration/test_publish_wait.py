"""``Publisher.wait`` and ``Publisher.nobody_reading`` on a real Redis, with the group ``store``
driven by hand the way the consumer drives it (XREADGROUP, then XACK, or the settle script that
writes a dead letter and acknowledges in one step)."""

from __future__ import annotations

import time

import redis

from timeline.publisher import Publisher
from timeline.settling import SETTLE_SCRIPT


def event(i: int) -> dict:
    return {"id": f"w-{i}", "kind": "report", "occurred_at": "2025-05", "headline": f"Event {i}",
            "entities": [{"name": "Somebody"}]}


def test_wait_tells_stored_dead_and_unsettled(redis_url: str, stream_name: str, redis_client: redis.Redis) -> None:
    with Publisher(redis_url, stream_name) as publisher:
        assert "no consumer group 'store'" in (publisher.nobody_reading() or "")
        redis_client.xgroup_create(stream_name, "store", id="0", mkstream=True)
        assert "has no consumers" in (publisher.nobody_reading() or "")
        report = publisher.publish([event(i) for i in range(4)])
        ids = report.entry_ids
        # delivered to a consumer, nothing acknowledged: all unsettled when the wait ends
        delivered = redis_client.xreadgroup("store", "c1", {stream_name: ">"}, count=3)
        assert publisher.nobody_reading() is None
        started = time.monotonic()
        outcome = publisher.wait(ids, timeout=0.5)
        assert outcome.unsettled == ids and not outcome.stored and not outcome.dead
        assert time.monotonic() - started < 5
        # w-0 acknowledged (stored); w-1 dead-lettered by the settle script; w-2 still pending; w-3 undelivered
        assert [e for e, _ in delivered[0][1]] == [i.encode() for i in ids[:3]]
        redis_client.xack(stream_name, "store", ids[0])
        settle = redis_client.register_script(SETTLE_SCRIPT)
        settle(keys=[stream_name, f"{stream_name}:dead"],
               args=["store", 1, ids[1], b"{}", "id_conflict", "id: w-1 was stored with other content"])
        outcome = publisher.wait(ids, timeout=0.3)
        assert outcome.stored == [ids[0]]
        assert outcome.dead == {ids[1]: ("id_conflict", "id: w-1 was stored with other content")}
        assert outcome.unsettled == ids[2:]
        # the rest settled: the wait returns as soon as they are
        redis_client.xack(stream_name, "store", ids[2])
        redis_client.xreadgroup("store", "c1", {stream_name: ">"}, count=10)
        redis_client.xack(stream_name, "store", ids[3])
        started = time.monotonic()
        outcome = publisher.wait(ids, timeout=30)
        assert time.monotonic() - started < 5
        assert outcome.stored == [ids[0], ids[2], ids[3]] and list(outcome.dead) == [ids[1]] and not outcome.unsettled
