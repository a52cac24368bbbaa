"""Stream entries that name a field more than once, on the real thing (issue 14, "nothing is
dropped silently"): a real ``timeline serve`` on a real Redis, entries written with ``XADD``.

``XADD s * event A event B`` keeps both values, but redis-py read an entry's fields into a dict
(the last value wins): such an entry was dead-lettered (or stored) by its last value alone and
the first one's bytes were lost. Now an entry with more than one ``event`` field is dead-lettered
``schema``, its dead letter's ``event`` holding every field in order (a JSON object naming
``event`` twice), whether the new entries' reader or the takeover of a dead consumer's entries
(``XAUTOCLAIM``) reads it; the rest of its batch is stored, and each entry acknowledged.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis

from e2e_support import dead_letters, pending, report_event, settle, store_rows, undelivered

pytestmark = pytest.mark.e2e

TIMELINE = str(Path(sys.executable).parent / "timeline")
TWO_EVENTS = "event: the entry has 2 'event' fields; publish one event per entry"


def event(i: int) -> bytes:
    return json.dumps(report_event(i, prefix="rep"), separators=(",", ":")).encode()


GARBAGE = b'{"id": "rep-garbage", "kind": "rep'  # not JSON


def xadd(client: redis.Redis, stream: str, *pairs: bytes | str) -> bytes:
    """An entry with these fields and values in turn (redis-py's ``xadd`` takes a dict: one value a name)."""
    return client.execute_command("XADD", stream, "*", *pairs)


def members(text: bytes) -> list[tuple[str, str]]:
    """A JSON object's members in order, a repeated name as often as it is written."""
    return json.loads(text, object_pairs_hook=list)


def publish_hostile(client: redis.Redis, stream: str) -> dict[str, tuple[bytes, list[tuple[bytes, bytes]]]]:
    """Valid entries around entries that repeat a field: name -> (entry id, its pairs)."""
    cases: dict[str, list[tuple[bytes, bytes]]] = {
        "before": [(b"event", event(1))],
        "valid-then-garbage": [(b"event", event(2)), (b"event", GARBAGE)],
        "garbage-then-valid": [(b"event", GARBAGE), (b"event", event(3))],
        "two-valid": [(b"event", event(4)), (b"event", event(5))],
        "one-event-note-twice": [(b"note", b"first"), (b"event", event(6)), (b"note", b"second")],
        "no-event-note-twice": [(b"note", b"first"), (b"note", "sécond".encode())],
        "after": [(b"event", event(7))],
    }
    return {name: (xadd(client, stream, *[part for pair in pairs for part in pair]), pairs) for name, pairs in cases.items()}


def check(client: redis.Redis, server: Any, entries: dict[str, tuple[bytes, list[tuple[bytes, bytes]]]]) -> None:
    stream = server.stream
    letters = {letter["source_id"]: letter for letter in dead_letters(client, stream)}
    problems = []
    for name in ("valid-then-garbage", "garbage-then-valid", "two-valid"):
        entry, pairs = entries[name]
        letter = letters.pop(entry, None)
        if letter is None:
            problems.append(f"{name}: no dead letter")
            continue
        try:
            held: Any = members(letter["event"])
        except ValueError:
            held = letter["event"]  # not the entry's fields: one value's bytes
        got = (letter["reason"], letter["error"].decode(), held)
        want = (b"schema", TWO_EVENTS, [(k.decode(), v.decode()) for k, v in pairs])
        if got != want:
            problems.append(f"{name}: {got!r}, expected {want!r}")
        else:  # each value's bytes, as published, from the dead letter
            assert [v.encode() for _, v in members(letter["event"])] == [v for _, v in pairs]
    entry, pairs = entries["no-event-note-twice"]
    letter = letters.pop(entry, None)
    if letter is None or (letter["reason"], members(letter["event"])) != (
        b"no_event", [("note", "first"), ("note", "sécond")]
    ):
        problems.append(f"no-event-note-twice: {letter!r}")
    if letters:
        problems.append(f"other dead letters: {list(letters.values())!r}")
    assert not problems, "\n".join(problems) + "\nserver stderr:\n" + server.stderr()[-3000:]

    stored = sorted(r[0] for r in store_rows(server.db, "SELECT event_id FROM events"))
    assert stored == ["rep-1", "rep-6", "rep-7"]  # nothing of an entry with two events
    assert (pending(client, stream), undelivered(client, stream)) == (0, 0)  # each acknowledged


@pytest.mark.parametrize("validators", ["1", "0"], ids=["validating-process", "in-process"])
def test_an_entry_with_two_event_fields_is_dead_lettered_with_both(
    serve: Any, redis_client: redis.Redis, stream_name: str, validators: str
) -> None:
    server = serve(TIMELINE_VALIDATORS=validators)
    entries = publish_hostile(redis_client, stream_name)
    settle(server, redis_client)
    check(redis_client, server, entries)


def test_the_takeover_of_a_dead_consumers_entries_sees_both(
    serve: Any, redis_client: redis.Redis, stream_name: str
) -> None:
    # A consumer of the group read the entries and died: they are pending, its own, until the
    # service's claimer (XAUTOCLAIM, after TIMELINE_CLAIM_IDLE_SECONDS=1) takes them over.
    redis_client.xgroup_create(stream_name, "store", id="0", mkstream=True)
    entries = publish_hostile(redis_client, stream_name)
    redis_client.xreadgroup("store", "dead-consumer", {stream_name: ">"})
    assert pending(redis_client, stream_name, "dead-consumer") == len(entries)
    server = serve()
    settle(server, redis_client)
    check(redis_client, server, entries)
    assert pending(redis_client, stream_name, "dead-consumer") == 0


def dead_letters_command(server: Any, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TIMELINE, "dead-letters", *args], env={**server.env, "COLUMNS": "200"}, capture_output=True, text=True,
        input=stdin, timeout=120,
    )


def test_such_a_dead_letter_is_not_replayed_but_resubmitted_with_one_event(
    serve: Any, redis_client: redis.Redis, stream_name: str
) -> None:
    """Replaying its ``event`` would publish the object of both values as one event: like a
    ``no_event`` dead letter, it is not sent. Resubmitted, a line naming a key twice is refused
    (reading it would keep one value without a word); one with the event meant is stored."""
    server = serve()
    entry = xadd(redis_client, stream_name, b"event", event(8), b"event", event(9))
    settle(server, redis_client)
    found = [d for d in dead_letters(redis_client, stream_name) if d["source_id"] == entry]
    stored = [r[0] for r in store_rows(server.db, "SELECT event_id FROM events")]
    assert len(found) == 1 and stored == [], (found, stored)
    (letter,) = found
    letter_id = letter["_id"].decode()

    done = dead_letters_command(server, "replay", letter_id)
    assert done.returncode == 1 and "replay: 1 not sent" in done.stdout, done.stdout + done.stderr
    assert "2 'event' fields" in done.stderr.replace("\n", " "), done.stderr
    assert [d["_id"] for d in dead_letters(redis_client, stream_name)] == [letter["_id"]]
    assert redis_client.xlen(stream_name) <= 1  # nothing published

    both = '{"id": "%s", "event": {"event": %s, "event": %s}}' % (letter_id, event(8).decode(), event(9).decode())
    done = dead_letters_command(server, "resubmit", "-", stdin=both + "\n")
    assert done.returncode == 1 and "line 1: event: named more than once" in done.stderr.replace("\n", " "), done.stderr
    assert [d["_id"] for d in dead_letters(redis_client, stream_name)] == [letter["_id"]]

    (first, _) = members(letter["event"])  # the dead letter's first value, the event meant
    done = dead_letters_command(server, "resubmit", "-", stdin=json.dumps({"id": letter_id, "event": first[1]}) + "\n")
    assert done.returncode == 0 and "1 stored" in done.stdout, done.stdout + done.stderr
    assert dead_letters(redis_client, stream_name) == []
    assert [r[0] for r in store_rows(server.db, "SELECT event_id FROM events")] == ["rep-8"]
