"""Replaying dead letters takes flat memory (issue 18: "replay all" must not load every parked
message): 20,000 dead letters replayed against a real ``timeline serve`` peak at about the
memory of 2,000 (one window of ``WINDOW``, 1,000, is in hand at a time: two windows against
twenty). Ten times the dead letters is what shows memory that grows with them; the sizes are
kept small because each window waits for the server to store it (50,000 against 5,000 took 36 s
of the suite on CI). 1,000,000 were measured once by hand: ``python -m bench.dead_letters``
(docs/performance.md, Session 8)."""

from __future__ import annotations

import json
import tracemalloc
from typing import Any

import pytest
import redis
from e2e_support import report_event, settle, store_counts

from timeline.deadletters import Mender, pages

pytestmark = pytest.mark.e2e


def plant(client: redis.Redis, dead_stream: str, prefix: str, n: int) -> None:
    for start in range(0, n, 5000):
        with client.pipeline(transaction=False) as pipe:
            for i in range(start, min(n, start + 5000)):
                event = json.dumps(report_event(i, prefix=prefix), separators=(",", ":"))
                pipe.xadd(dead_stream, {"event": event, "reason": "schema", "error": "event: a bug", "source_id": "1-0"})
            pipe.execute()


def replay_peak(client: redis.Redis, stream: str) -> tuple[int, int]:
    """(dead letters stored and removed, peak bytes traced) of replaying every dead letter."""
    mender = Mender(client, stream, "replay", timeout=120)
    tracemalloc.start()
    try:
        items = ((letter, letter.event) for page in pages(client, f"{stream}:dead") for letter in page)
        stored = sum(1 for outcome in mender.run(items) if outcome.status == "stored")
        return stored, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_replaying_ten_times_more_takes_no_more_memory(serve: Any, redis_client: redis.Redis, stream_name: str) -> None:
    server = serve(TIMELINE_BATCH_SIZE="1000")
    dead_stream = f"{stream_name}:dead"
    try:
        plant(redis_client, dead_stream, "small", 2_000)
        small = replay_peak(redis_client, stream_name)
        plant(redis_client, dead_stream, "large", 20_000)
        large = replay_peak(redis_client, stream_name)
        assert (small[0], large[0]) == (2_000, 20_000)
        assert redis_client.xlen(dead_stream) == 0
        settle(server, redis_client, timeout=300)
        assert store_counts(server.db)[:2] == (22_000, 22_000)
        # one window in hand either way: ten times the dead letters, not ten times the memory
        assert large[1] < 1.5 * small[1], (small, large)
        print(f"peak traced: 2,000 -> {small[1] / 1e6:.2f} MB; 20,000 -> {large[1] / 1e6:.2f} MB")
    finally:
        redis_client.delete(f"{dead_stream}:audit")
