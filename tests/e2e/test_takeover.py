"""End to end: a real ``timeline serve`` takes over what a dead consumer left pending, in batches.

docs/contract.md §2: a consumer that dies leaves its entries pending, and another one takes them
over after ``TIMELINE_CLAIM_IDLE_SECONDS`` (1 s here). The entries here were read by a consumer
named ``dead`` (``XREADGROUP``, never acknowledged), on a Redis of the test's own (its
``INFO commandstats`` counts only what the server under test sent). The server must store each
event once, dead-letter each rejected entry once, acknowledge everything, and take the entries
over a batch at a time: FastStream's ``min_idle_time`` subscriber claimed one entry per
``XAUTOCLAIM``, so each was validated, appended and acknowledged alone (14-20 events/s on a
loaded machine, docs/performance.md).
"""

from __future__ import annotations

import json
import time

import httpx
import pytest
import redis

from e2e_support import GROUP, dead_letters, pending, report_event, settle, store_counts
from timeline.embedded_redis import RedisServer

pytestmark = pytest.mark.e2e

N = 3000
REJECTED = 20  # entries that are not JSON: dead-lettered, once each
BATCH = 1000  # TIMELINE_BATCH_SIZE's default
DEAD = "dead"


def leave_pending(client: redis.Redis, stream: str, n: int, rejected: int) -> set[bytes]:
    """``n`` valid events and ``rejected`` broken entries, all read by the consumer ``dead`` and
    never acknowledged; returns the broken entries' ids."""
    client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    every = n // max(rejected, 1)
    bad: list[bool] = []  # for each entry added, whether it is a broken one
    with client.pipeline(transaction=False) as pipe:
        for i in range(n):
            pipe.xadd(stream, {"event": json.dumps(report_event(i, prefix="takeover"))})
            bad.append(False)
            if i % every == every - 1 and i // every < rejected:
                pipe.xadd(stream, {"event": b"{not json"})
                bad.append(True)
        ids = pipe.execute()
    broken = {entry_id for entry_id, is_bad in zip(ids, bad, strict=True) if is_bad}
    assert len(broken) == rejected
    read = client.xreadgroup(GROUP, DEAD, {stream: ">"}, count=n + rejected + 1)
    assert len(read[0][1]) == n + rejected
    assert pending(client, stream, DEAD) == n + rejected
    return broken


def calls(client: redis.Redis, command: str) -> int:
    return int(client.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))


@pytest.mark.parametrize("backend", ["sqlite", "postgres"], indirect=True)
def test_a_dead_consumers_entries_are_taken_over_in_batches(
    serve, backend: str, own_redis: RedisServer, stream_name: str
) -> None:
    client = redis.Redis.from_url(own_redis.url)
    broken = leave_pending(client, stream_name, N, REJECTED)
    acks_before = calls(client, "xack")

    server = serve(redis_url=own_redis.url)
    settle(server, client, timeout=240)

    assert store_counts(server.db) == (N, N, 1, N)
    letters = dead_letters(client, stream_name)
    assert sorted(letter["source_id"] for letter in letters) == sorted(broken)
    assert {letter["reason"] for letter in letters} == {b"bad_json"}
    assert pending(client, stream_name) == 0 and pending(client, stream_name, DEAD) == 0
    consumer = httpx.get(f"{server.base_url}/health", timeout=10).json()["consumer"]
    assert consumer["entries"] == N + REJECTED, consumer
    # In batches: one batch per XAUTOCLAIM of up to TIMELINE_BATCH_SIZE entries (3 here, a few
    # more if a claim came while part of the list was not yet idle); one entry each was N.
    assert consumer["batches"] <= 3 * (N + REJECTED) // BATCH, consumer
    assert consumer["claimed"] == {"batches": consumer["batches"], "entries": N + REJECTED}, consumer
    # Redis's side: XACK calls (the settling script acknowledges up to 500 at a time, a dead
    # letter's entry alone); one entry a batch took N + REJECTED of them.
    acks = calls(client, "xack") - acks_before
    assert acks <= consumer["batches"] * 4 + REJECTED, acks
    client.close()


def test_sigterm_while_taking_over_stores_or_leaves_pending_and_exits_0(
    serve, own_redis: RedisServer, stream_name: str
) -> None:
    """Stopped in the middle of a takeover: the claimer is cancelled wherever it is, what it
    claimed and had not settled is settled at stop (the consumer's own pending list), the exit is
    clean, and a restart takes over the rest: every event once."""
    n = 8000
    client = redis.Redis.from_url(own_redis.url)
    leave_pending(client, stream_name, n, 0)
    server = serve(redis_url=own_redis.url, TIMELINE_BATCH_SIZE="500")

    def stored() -> int:
        try:
            return store_counts(server.db)[0]
        except Exception:  # noqa: BLE001 - the store's file or table not yet made
            return 0

    deadline = time.monotonic() + 120
    while stored() == 0:  # the first claimed batch is stored: the takeover is under way
        assert time.monotonic() < deadline, f"nothing taken over; stderr:\n{server.stderr()}"
        time.sleep(0.005)
    status = server.terminate(timeout=40)
    after = stored()
    assert after < n, "the takeover finished before SIGTERM could be sent mid-way"
    assert pending(client, stream_name, server.consumer) == 0, server.stderr()
    assert status == 0, server.stderr()

    server.restart(consumer="e2e-after-sigterm")
    settle(server, client, timeout=240)
    assert store_counts(server.db) == (n, n, 1, n)
    assert pending(client, stream_name) == 0
    assert dead_letters(client, stream_name) == []
    client.close()
