"""``timeline.backlog`` on a real Redis: the session's (7 when REDIS_URL is set) and the embedded
redis-server (6.2, whose groups keep no lag). The backlog is exact, read from counts beside the
stream (never the entries: no XRANGE, even with 100,000+ waiting), kept right across trims, and
a count lost by a consumer that died heals when the group catches up."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from uuid import uuid4

import pytest
from redis.asyncio import Redis

from timeline.backlog import StreamBacklog, counts_key
from timeline.consumer import StreamConsumer
from timeline.embedded_redis import RedisServer
from timeline.trimming import TRIM_SCRIPT, trim_acknowledged

GROUP = "store"


@pytest.fixture(params=["session", "embedded-6.2"])
async def client(request: pytest.FixtureRequest, redis_url: str, tmp_path: Path) -> AsyncIterator[Redis]:
    server = None
    url = redis_url
    if request.param == "embedded-6.2":
        server = RedisServer(tmp_path / "redis", appendonly=False)
        url = server.start()
    redis = Redis.from_url(url)
    try:
        if request.param == "embedded-6.2":
            assert (await redis.info("server"))["redis_version"].startswith("6.2")
        yield redis
    finally:
        await redis.aclose()
        if server is not None:
            server.stop()


@pytest.fixture
async def stream(client: Redis) -> AsyncIterator[str]:
    name = f"test:{uuid4().hex}:events"
    yield name
    await client.delete(name, counts_key(name))


async def add(redis: Redis, stream: str, n: int) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        for i in range(n):
            pipe.xadd(stream, {"event": f"{i}"})
            if i % 10_000 == 9_999:
                await pipe.execute()
        await pipe.execute()


async def read(redis: Redis, counts: StreamBacklog, n: int, *, count: bool = True) -> list[bytes]:
    """What the consumer's reader does: XREADGROUP ``>``, then count the batch as delivered."""
    reply = await redis.xreadgroup(GROUP, "c", {counts.stream: ">"}, count=n)
    ids = [entry_id for entry_id, _ in reply[0][1]] if reply else []
    if count:
        await counts.delivered(ids)
    return ids


async def truth(redis: Redis, stream: str) -> int:
    """The backlog counted the expensive way: pending plus every entry after last-delivered-id."""
    group = next(g for g in await redis.xinfo_groups(stream) if g["name"] == GROUP.encode())
    after = await redis.xrange(stream, f"({group['last-delivered-id'].decode()}", "+")
    return int(group["pending"]) + len(after)


async def test_exact_counts(client: Redis, stream: str) -> None:
    counts = StreamBacklog(client, stream, GROUP)
    await add(client, stream, 10)
    assert await counts.measure() == (10, True)  # no group yet: the whole stream
    assert await counts.ensure_group() is True
    assert await counts.ensure_group() is False  # it exists: left as it is
    assert await counts.measure() == (10, True)
    ids = await read(client, counts, 4)
    await client.xack(stream, GROUP, *ids[:1])
    assert await counts.measure() == (3 + 6, True)  # 3 pending, 6 not given yet
    await read(client, counts, 100)
    await client.xack(stream, GROUP, *ids[1:])
    assert await counts.measure() == (6, True)  # given to the end: pending only
    await add(client, stream, 5)
    assert await counts.measure() == (6 + 5, True)


async def test_pending_and_not_given_apart_and_the_oldest_entrys_time(client: Redis, stream: str) -> None:
    """What /health's lag and /metrics' stream gauges take: the two parts of the backlog, and
    when the oldest entry not yet stored was added (from its id)."""
    consumer = StreamConsumer.__new__(StreamConsumer)  # only what ``backlog`` uses
    consumer.redis = client
    consumer.settings = SimpleNamespace(stream=stream, group=GROUP)  # type: ignore[assignment]
    consumer.counts = counts = StreamBacklog(client, stream, GROUP)
    await counts.ensure_group()
    await add(client, stream, 10)
    ids = await read(client, counts, 4)
    await client.xack(stream, GROUP, ids[0])
    found = await consumer.backlog()
    assert (found.pending, found.undelivered, found.exact) == (3, 6, True)
    assert found.oldest_ms == int(ids[1].split(b"-")[0])  # the oldest pending entry
    await client.xack(stream, GROUP, *ids[1:])
    found = await consumer.backlog()  # nothing pending: the first entry not given yet
    first_waiting = (await client.xrange(stream, f"({ids[-1].decode()}", "+", count=1))[0][0]
    assert (found.pending, found.undelivered, found.oldest_ms) == (0, 6, int(first_waiting.split(b"-")[0]))
    ids = await read(client, counts, 100)
    await client.xack(stream, GROUP, *ids)
    found = await consumer.backlog()
    assert (found.total, found.oldest_ms, found.seconds) == (0, None, 0.0)


async def test_a_large_backlog_is_exact_and_reads_no_entry(
    client: Redis, stream: str, request: pytest.FixtureRequest
) -> None:
    """120,000 entries waiting, read and trimmed in part: the backlog is exact, and 50
    concurrent measurements neither read an entry nor grow Redis (checked on the embedded 6.2
    server, which this test has to itself: the session's Redis serves other tests too)."""
    counts = StreamBacklog(client, stream, GROUP)
    await counts.ensure_group()
    await add(client, stream, 120_000)
    ids = await read(client, counts, 30_000)
    await client.xack(stream, GROUP, *ids)
    removed, _ = await trim_acknowledged(client.register_script(TRIM_SCRIPT), stream, 0, counts.counts)
    assert removed > 0 and await client.xlen(stream) < 120_000
    await read(client, counts, 1_000)  # pending
    expected = await truth(client, stream)
    assert expected == 90_000
    await client.config_resetstat()
    memory = (await client.info("memory"))["used_memory"]
    results = await asyncio.gather(*(counts.measure() for _ in range(50)))
    grew = (await client.info("memory"))["used_memory"] - memory
    stats = await client.info("commandstats")
    assert set(results) == {(expected, True)}
    if request.node.callspec.params["client"] == "session":
        return
    read_entries = {name: stats[name]["calls"] for name in stats if name in (
        "cmdstat_xrange", "cmdstat_xrevrange", "cmdstat_xread", "cmdstat_xreadgroup")}
    assert read_entries == {}, read_entries
    assert grew < 5_000_000, f"Redis grew by {grew} bytes under 50 concurrent measurements"


async def test_a_lost_count_heals_when_the_group_catches_up(client: Redis, stream: str) -> None:
    counts = StreamBacklog(client, stream, GROUP)
    await counts.ensure_group()
    await add(client, stream, 100)
    ids = await read(client, counts, 10, count=False)  # a consumer died before counting its batch
    await client.xack(stream, GROUP, *ids)  # another took it over and stored it
    if (await client.info("server"))["redis_version"] < "7":
        assert await counts.measure() == (100, True)  # high by the batch: 90 wait
    else:
        assert await counts.measure() == (90, True)  # Redis 7's lag
    await read(client, counts, 1_000)  # caught up: the counts are anchored anew
    assert await counts.measure() == (90, True)
    await add(client, stream, 7)
    assert await counts.measure() == (97, True) == (await truth(client, stream), True)


async def test_a_batch_read_before_the_anchor_is_not_counted_twice(client: Redis, stream: str) -> None:
    counts = StreamBacklog(client, stream, GROUP)
    await counts.ensure_group()
    await add(client, stream, 50)
    ids = await read(client, counts, 50, count=False)  # read; not counted yet
    assert await counts.measure() == (50, True)  # caught up: anchored at the batch's last id
    await counts.delivered(ids)  # counted late: already in the anchor, so not again
    await add(client, stream, 5)
    assert await counts.measure() == (55, True) == (await truth(client, stream), True)


async def test_a_group_made_elsewhere_is_an_upper_bound_until_it_catches_up(client: Redis, stream: str) -> None:
    counts = StreamBacklog(client, stream, GROUP)
    await add(client, stream, 20)
    await client.xgroup_create(stream, GROUP, id="0")  # not through ensure_group: no anchor
    await read(client, counts, 5)
    backlog, exact = await counts.measure()
    if (await client.info("server"))["redis_version"] < "7":
        assert (backlog, exact) == (20, False)  # the stream's length: at most that
    else:
        assert (backlog, exact) == (20, True)  # Redis 7's lag
    await read(client, counts, 100)
    await add(client, stream, 3)
    assert await counts.measure() == (23, True) == (await truth(client, stream), True)
