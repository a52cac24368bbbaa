"""Trimming the events stream (timeline.trimming) on a real Redis: only what every group of the
stream has acknowledged goes, beyond a margin of acknowledged entries."""

from __future__ import annotations

import asyncio

import pytest
import redis
import redis.asyncio

from timeline.trimming import TRIM_SCRIPT, trim_acknowledged

N = 1000


def trim(url: str, stream: str, keep: int = 0) -> tuple[int, str | None]:
    async def run() -> tuple[int, str | None]:
        client = redis.asyncio.Redis.from_url(url)
        try:
            return await trim_acknowledged(client.register_script(TRIM_SCRIPT), stream, keep, f"{stream}:counts")
        finally:
            await client.aclose()

    return asyncio.run(run())


@pytest.fixture
def ids(redis_client: redis.Redis, stream_name: str) -> list[bytes]:
    with redis_client.pipeline(transaction=False) as pipe:
        for i in range(N):
            pipe.xadd(stream_name, {"event": f'{{"n": {i}}}'.encode() + b" " * 200})
        return pipe.execute()


def read(client: redis.Redis, stream: str, group: str, count: int, consumer: str = "c") -> list[bytes]:
    reply = client.xreadgroup(group, consumer, {stream: ">"}, count=count)
    return [entry_id for entry_id, _ in reply[0][1]] if reply else []


def present(client: redis.Redis, stream: str) -> list[bytes]:
    return [entry_id for entry_id, _ in client.xrange(stream)]


def test_a_stream_without_groups_is_not_trimmed(redis_url, redis_client, stream_name, ids) -> None:
    assert trim(redis_url, stream_name) == (0, None)
    assert redis_client.xlen(stream_name) == N


def test_what_the_group_acknowledged_goes_and_its_pending_entries_stay(
    redis_url, redis_client, stream_name, ids
) -> None:
    redis_client.xgroup_create(stream_name, "store", id="0")
    delivered = read(redis_client, stream_name, "store", 600)
    assert trim(redis_url, stream_name)[0] == 0  # all delivered ones pending: nothing acknowledged

    redis_client.xack(stream_name, "store", *delivered[:400])
    removed, bound = trim(redis_url, stream_name)
    assert bound == ids[400].decode()  # the oldest pending entry
    assert 0 < removed <= 400 and redis_client.xlen(stream_name) == N - removed
    assert present(redis_client, stream_name)[-(N - 400):] == ids[400:]  # nothing from there on lost

    redis_client.xack(stream_name, "store", *delivered[400:])
    trim(redis_url, stream_name)
    assert present(redis_client, stream_name)[-(N - 600):] == ids[600:]  # not delivered yet: kept
    assert redis_client.xlen(stream_name) < N - 400

    redis_client.xack(stream_name, "store", *read(redis_client, stream_name, "store", N))
    trim(redis_url, stream_name)
    assert redis_client.xlen(stream_name) == 0


def test_a_lagging_group_keeps_everything_it_has_not_acknowledged(
    redis_url, redis_client, stream_name, ids
) -> None:
    for group in ("store", "audit", "mirror"):
        redis_client.xgroup_create(stream_name, group, id="0")
    redis_client.xack(stream_name, "store", *read(redis_client, stream_name, "store", N))  # store: all done
    audit = read(redis_client, stream_name, "audit", 700, consumer="dead")  # a consumer that died...
    redis_client.xack(stream_name, "audit", *audit[:250], *audit[300:])  # ...with 250..299 pending
    redis_client.xack(stream_name, "mirror", *read(redis_client, stream_name, "mirror", 500))  # none pending

    removed, bound = trim(redis_url, stream_name)
    assert bound == ids[250].decode()
    assert present(redis_client, stream_name)[-(N - 250):] == ids[250:]

    redis_client.xack(stream_name, "audit", *audit[250:300])  # audit now needs ids[700] on; mirror ids[500] on
    removed, bound = trim(redis_url, stream_name)
    assert bound == ids[500].decode()
    assert present(redis_client, stream_name)[-(N - 500):] == ids[500:]
    assert redis_client.xlen(stream_name) < N - 250


def test_a_margin_of_acknowledged_entries_is_kept(redis_url, redis_client, stream_name, ids) -> None:
    redis_client.xgroup_create(stream_name, "store", id="0")
    delivered = read(redis_client, stream_name, "store", 800)
    redis_client.xack(stream_name, "store", *delivered)
    removed, bound = trim(redis_url, stream_name, keep=100)
    assert bound == ids[800].decode()
    assert present(redis_client, stream_name)[-300:] == ids[700:]  # 100 acknowledged + 200 unread
    assert redis_client.xlen(stream_name) == N - removed < 400

    redis_client.xack(stream_name, "store", *read(redis_client, stream_name, "store", N))  # all acknowledged
    removed, bound = trim(redis_url, stream_name, keep=100)
    assert bound is None and removed > 0
    assert present(redis_client, stream_name)[-100:] == ids[-100:]
    assert 100 <= redis_client.xlen(stream_name) < 300

    redis_client.delete(stream_name)
    assert trim(redis_url, stream_name, keep=100) == (0, None)  # no stream: nothing to do
