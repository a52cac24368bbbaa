"""``StreamConsumer.backlog`` on a real Redis: the session's (7 when REDIS_URL is set) and the
embedded redis-server (6.2, whose groups keep no lag): exact counts, and past the cap a lower
bound read in pages rather than the whole stream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from uuid import uuid4

import pytest
from redis.asyncio import Redis

from timeline.consumer import BACKLOG_COUNT_CAP, StreamConsumer
from timeline.embedded_redis import RedisServer


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


async def backlog(redis: Redis, stream: str) -> tuple[int, bool]:
    consumer = SimpleNamespace(redis=redis, settings=SimpleNamespace(stream=stream, group="store"))
    return await StreamConsumer.backlog(consumer)  # type: ignore[arg-type]


async def add(redis: Redis, stream: str, n: int) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        for i in range(n):
            pipe.xadd(stream, {"event": f"{i}"})
        await pipe.execute()


async def test_exact_counts(client: Redis) -> None:
    stream = f"test:{uuid4().hex}:events"
    try:
        await add(client, stream, 10)
        assert await backlog(client, stream) == (10, True)  # no group yet: the whole stream
        await client.xgroup_create(stream, "store", id="0")
        assert await backlog(client, stream) == (10, True)
        read = await client.xreadgroup("store", "c", {stream: ">"}, count=4)
        ids = [entry_id for entry_id, _ in read[0][1]]
        await client.xack(stream, "store", *ids[:1])
        assert await backlog(client, stream) == (3 + 6, True)  # 3 pending, 6 undelivered
        await client.xreadgroup("store", "c", {stream: ">"}, count=100)
        await client.xack(stream, "store", *ids[1:])
        assert await backlog(client, stream) == (6, True)  # delivered to the end: pending only
    finally:
        await client.delete(stream)


async def test_past_the_cap_a_lower_bound(client: Redis) -> None:
    stream = f"test:{uuid4().hex}:events"
    try:
        await client.xgroup_create(stream, "store", id="0", mkstream=True)
        await add(client, stream, BACKLOG_COUNT_CAP)
        assert await backlog(client, stream) == (BACKLOG_COUNT_CAP, True)
        await add(client, stream, 1_000)
        count, exact = await backlog(client, stream)
        if (await client.info("server"))["redis_version"] < "7":
            assert (count, exact) == (BACKLOG_COUNT_CAP, False)
        else:
            assert (count, exact) == (BACKLOG_COUNT_CAP + 1_000, True)
    finally:
        await client.delete(stream)
