"""``timeline.entries.keep_repeated_fields`` on the real Redis, over RESP2 and RESP3: an entry
whose field names are distinct reads exactly as redis-py's default (legacy) callbacks read it,
for every command the consumer and the tools read entries with; one that names a field twice
reads as ``RepeatedFields``, each pair in order (redis-py alone keeps the last value)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from timeline.entries import RepeatedFields, keep_repeated_fields


@pytest.fixture(params=[None, 2, 3], ids=["default-protocol", "resp2", "resp3"])
def client(request: pytest.FixtureRequest, redis_url: str) -> Iterator[redis.Redis]:
    options = {} if request.param is None else {"protocol": request.param}
    with keep_repeated_fields(redis.Redis.from_url(redis_url, **options)) as ours:
        yield ours


def reads(r: redis.Redis, stream: str) -> dict[str, Any]:
    """What each command answers for the stream's entries (read by a group of its own)."""
    group = f"g{len(r.xinfo_groups(stream)) if r.exists(stream) else 0}"
    r.xgroup_create(stream, group, id="0", mkstream=True)
    return {
        "XREADGROUP": r.xreadgroup(group, "c1", {stream: ">"}),
        "XREADGROUP 0": r.xreadgroup(group, "c1", {stream: "0"}),
        "XREAD": r.xread({stream: "0"}),
        "XAUTOCLAIM": r.xautoclaim(stream, group, "c2", 0)[:2],
        "XCLAIM": r.xclaim(stream, group, "c3", 0, [e[0] for e in r.xrange(stream)]),
        "XRANGE": r.xrange(stream),
        "XREVRANGE": r.xrevrange(stream),
    }


def test_distinct_names_read_as_redis_py_reads_them(client: redis.Redis, redis_url: str, stream_name: str) -> None:
    client.xadd(stream_name, {"event": b"one"})
    client.xadd(stream_name, {"event": b"two", "traceparent": b"00-ab-cd-01", "x": b"\xff"})
    client.execute_command("XADD", stream_name, "*", "only", "")
    ours = reads(client, stream_name)
    with redis.Redis.from_url(redis_url) as plain:  # redis-py's defaults (RESP3, legacy shapes)
        theirs = reads(plain, stream_name)
    assert ours == theirs
    assert all(type(fields) is dict for _, fields in ours["XRANGE"])
    assert ours["XREADGROUP"][0][1] == ours["XRANGE"]  # [[stream, entries]]: what FastStream reads


def test_a_repeated_name_reads_with_every_pair(client: redis.Redis, stream_name: str) -> None:
    pairs = [(b"event", b"A"), (b"note", b"n"), (b"event", b"B")]
    entry = client.execute_command("XADD", stream_name, "*", *[part for pair in pairs for part in pair])
    client.xadd(stream_name, {"event": b"C"})
    for command, answer in reads(client, stream_name).items():
        entries = answer[0][1] if command.startswith("XREAD") else answer[1] if command == "XAUTOCLAIM" else answer
        found = {entry_id: fields for entry_id, fields in entries}
        assert isinstance(found[entry], RepeatedFields), command
        assert found[entry].pairs == pairs and found[entry] == {b"event": b"B", b"note": b"n"}, command
        assert found[entry].count(b"event") == 2 and found[entry].count(b"note") == 1
        assert [type(f) for i, f in found.items() if i != entry] == [dict], command
