"""A batch handled twice (claimed while its first handling is still under way) is dead-lettered
once: the dead letters and the acknowledgement are one script on the real Redis."""

from __future__ import annotations

import asyncio

import redis
from redis.asyncio import Redis

from timeline.service import DeadLetter
from timeline.settling import SETTLE_SCRIPT, settle

GROUP = "store"


def test_a_batch_settled_twice_leaves_one_dead_letter_each(redis_url: str, redis_client: redis.Redis, stream_name: str) -> None:
    dead_stream = f"{stream_name}:dead"
    ids = [redis_client.xadd(stream_name, {"event": f"entry {i}".encode()}) for i in range(700)]
    redis_client.xgroup_create(stream_name, GROUP, id="0")
    delivered = redis_client.xreadgroup(GROUP, "c1", {stream_name: ">"}, count=1000)[0][1]
    assert len(delivered) == 700
    # every third entry is rejected, with what a message may hold: quotes, newlines, any bytes
    dead = [DeadLetter(i, b"\xff{not json \"\n", "bad_json", "event: not valid JSON: \u00e9") for i in ids[::3]]

    async def run() -> list[list[DeadLetter]]:
        client = Redis.from_url(redis_url)
        try:
            script = client.register_script(SETTLE_SCRIPT)
            # the claimer takes the batch over from the same consumer while it is in hand
            claimed = await client.xautoclaim(stream_name, GROUP, "c1", min_idle_time=0, start_id="0", count=1000)
            assert len(claimed[1]) == 700
            return [await settle(script, stream_name, dead_stream, GROUP, ids, dead) for _ in range(2)]
        finally:
            await client.aclose()

    first, second = asyncio.run(run())
    assert (first, second) == (dead, [])
    letters = redis_client.xrange(dead_stream)
    assert [f[b"source_id"] for _, f in letters] == [d.source_id for d in dead]
    assert letters[0][1] == {b"event": b"\xff{not json \"\n", b"reason": b"bad_json",
                             b"error": "event: not valid JSON: \u00e9".encode(), b"source_id": ids[0]}
    assert redis_client.xpending(stream_name, GROUP)["pending"] == 0
