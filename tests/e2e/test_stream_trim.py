"""End to end: ``timeline serve`` trims the events stream of what every group has acknowledged.

The store is the record, the stream is transport: once stored (and acknowledged by every other
group of the stream too) an entry leaves the stream, beyond ``TIMELINE_STREAM_KEEP``
acknowledged ones. A group that lags keeps everything it has not acknowledged; a consumer
killed with entries pending loses none of them; the dead-letter stream keeps its entries.
"""

from __future__ import annotations

import time

import pytest
import redis

from e2e_support import dead_letters, pending, report_event, settle, store_counts
from timeline.publisher import Publisher

pytestmark = pytest.mark.e2e

KEEP = 100


def wait_until(check, timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.1)


def entry_ids(client: redis.Redis, stream: str) -> list[bytes]:
    return [entry_id for entry_id, _ in client.xrange(stream)]


def test_the_stream_shrinks_but_a_lagging_group_keeps_what_it_has_not_read(
    serve, redis_client: redis.Redis, stream_name: str
) -> None:
    redis_client.xgroup_create(stream_name, "audit", id="0", mkstream=True)  # another reader, not started
    server = serve(TIMELINE_STREAM_KEEP=str(KEEP))
    events = [report_event(i, prefix="trim") for i in range(3000)]
    invalid = [b'{"kind": "nothing"}', b"not json"]
    with Publisher(server.redis_url, stream_name) as publisher:
        ids = [i.encode() for i in publisher.publish(events).entry_ids]
        for data in invalid:  # as a scraper would XADD them: dead-lettered by the consumer
            ids.append(redis_client.xadd(stream_name, {"event": data}))
    settle(server, redis_client)
    assert store_counts(server.db)[:2] == (3000, 3000)
    assert len(dead_letters(redis_client, stream_name)) == 2

    time.sleep(2.5)  # the trimmer ran at least twice since the store acknowledged everything
    assert redis_client.xlen(stream_name) == 3002  # audit has read nothing: all kept for it

    # audit reads 1000 entries while the service stores a few more: trimmed at the next batch.
    reply = redis_client.xreadgroup("audit", "a", {stream_name: ">"}, count=1000)
    redis_client.xack(stream_name, "audit", *[entry_id for entry_id, _ in reply[0][1]])
    with Publisher(server.redis_url, stream_name) as publisher:
        ids += [i.encode() for i in publisher.publish([report_event(i, prefix="trim") for i in range(3000, 3010)]).entry_ids]
    wait_until(lambda: redis_client.xlen(stream_name) < 2012 + KEEP + 100, what="trimmed to audit's position")
    assert entry_ids(redis_client, stream_name)[-2012:] == ids[1000:]  # all audit has not read

    # audit reads the rest while nothing else arrives: trimmed all the same, within 10 s.
    reply = redis_client.xreadgroup("audit", "a", {stream_name: ">"}, count=10_000)
    redis_client.xack(stream_name, "audit", *[entry_id for entry_id, _ in reply[0][1]])
    wait_until(lambda: redis_client.xlen(stream_name) <= KEEP + 100, what="trimmed to the margin")
    assert redis_client.xlen(stream_name) >= KEEP
    assert len(dead_letters(redis_client, stream_name)) == 2  # the dead-letter stream is never trimmed


def test_a_consumer_killed_with_entries_pending_loses_none_to_trimming(
    serve, redis_client: redis.Redis, stream_name: str, tmp_path
) -> None:
    db = tmp_path / "shared" / "timeline.db"
    first = serve(db=db, TIMELINE_STREAM_KEEP="0")
    events = [report_event(i, prefix="killed") for i in range(6000)]
    with Publisher(first.redis_url, stream_name) as publisher:
        publisher.publish(events)
    wait_until(lambda: pending(redis_client, stream_name, first.consumer) > 0 and store_counts(db)[0] > 0,
               what="entries pending for the first consumer")  # fmt: skip
    first.kill()
    left = [row["message_id"] for row in redis_client.xpending_range(
        stream_name, "store", min="-", max="+", count=100_000, consumername=first.consumer)]  # fmt: skip
    assert left

    # Another consumer trims every second; it takes the dead one's entries over only after 4 s.
    second = serve(db=db, TIMELINE_STREAM_KEEP="0", TIMELINE_CLAIM_IDLE_SECONDS="4")
    time.sleep(2.5)
    kept = {entry_id for entry_id, _ in redis_client.xrange(stream_name, min=left[0], max=left[-1])}
    assert set(left) <= kept, f"{len(set(left) - kept)} pending entries trimmed"
    settle(second, redis_client)
    assert store_counts(db) == (6000, 6000, 1, 6000)
    wait_until(lambda: redis_client.xlen(stream_name) < 100, what="everything trimmed once stored")
    assert dead_letters(redis_client, stream_name) == []
