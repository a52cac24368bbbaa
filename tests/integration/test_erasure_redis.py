"""Erasure in Redis (timeline.erasing.scrub_redis) on the real Redis: the entries that carry an
erased id leave the stream for good (not merely flagged, as XDEL does), and everything else
about the stream stays: the other entries and their ids, the last id, the consumer groups, their
consumers and pending entries (owner and delivery count)."""

from __future__ import annotations

import json

import redis

from timeline.erasing import carried_ids, scrub_redis


def entry(event_id: str | None, text: str = "t") -> dict[str, str]:
    event = {"kind": "report", "occurred_at": "2025", "headline": text, "entities": [{"name": "X"}]}
    if event_id is not None:
        event["id"] = event_id
    return {"event": json.dumps(event)}


def test_carried_ids() -> None:
    assert carried_ids({b"event": b'{"id": "a", "kind": "nope"}'}) == {"a"}
    derived = carried_ids({k.encode(): v.encode() for k, v in entry(None).items()})
    assert len(derived) == 1 and next(iter(derived))  # the id derived from the content
    assert carried_ids({b"event": b"not json"}) == set()
    assert carried_ids({b"other": b"x"}) == set()


def test_the_stream_is_written_again_without_the_entries(redis_client: redis.Redis, stream_name: str) -> None:
    r = redis_client
    ids = [r.xadd(stream_name, entry(name, f"text {i}")) for i, name in enumerate(["a", "gone", "b", "gone", "c"])]
    r.xgroup_create(stream_name, "store", id="0")
    r.xreadgroup("store", "c1", {stream_name: ">"}, count=3)  # a, gone, b pending with c1
    r.xreadgroup("store", "c2", {stream_name: ">"}, count=1)  # gone (the second) pending with c2
    r.xclaim(stream_name, "store", "c1", 0, [ids[2]])  # b delivered twice
    r.xgroup_createconsumer(stream_name, "store", "idle-one")
    last_before = r.xinfo_stream(stream_name)["last-generated-id"]
    r.xdel(stream_name, ids[4])  # c deleted earlier: the last id stays

    result = scrub_redis(r, [stream_name], {"gone"})

    assert result.deleted == {stream_name: 2}
    assert [e[0] for e in r.xrange(stream_name)] == [ids[0], ids[2]]
    assert r.xinfo_stream(stream_name)["last-generated-id"] == last_before
    group = r.xinfo_groups(stream_name)[0]
    assert group["name"] == b"store" and group["last-delivered-id"] == ids[3]
    assert sorted(c["name"] for c in r.xinfo_consumers(stream_name, "store")) == [b"c1", b"c2", b"idle-one"]
    pending = {p["message_id"]: (p["consumer"], p["times_delivered"])
               for p in r.xpending_range(stream_name, "store", "-", "+", 10)}
    assert pending == {ids[0]: (b"c1", 1), ids[2]: (b"c1", 2)}
    assert r.xadd(stream_name, entry("d")) > last_before
    assert b"gone" not in r.dump(stream_name)


def test_an_entry_naming_event_twice_and_its_dead_letter_are_found(redis_client: redis.Redis, stream_name: str) -> None:
    """``XADD s * event A event B``: A's id is carried too (redis-py alone reads B only), and so
    it is by the dead letter of such an entry, whose ``event`` names ``event`` twice."""
    r, dead = redis_client, f"{stream_name}:dead"
    gone, kept = entry("gone")["event"], entry("kept")["event"]
    both = r.execute_command("XADD", stream_name, "*", "event", gone, "event", kept)
    other = r.xadd(stream_name, entry("other"))
    letter_event = "{" + ", ".join(f'"event": {json.dumps(v)}' for v in (gone, kept)) + "}"
    r.xadd(dead, {"event": letter_event, "reason": "schema", "error": "e", "source_id": both})
    r.xadd(dead, {"event": letter_event.replace('\\"gone\\"', '\\"elsewhere\\"'), "reason": "schema"})

    result = scrub_redis(r, [stream_name, dead], {"gone"})

    assert result.deleted == {stream_name: 1, dead: 1}
    assert [e[0] for e in r.xrange(stream_name)] == [other]
    assert b"gone" not in r.dump(stream_name) and b"gone" not in r.dump(dead)
