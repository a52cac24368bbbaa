"""Dead letters an operator can work with (issue 18, point 2), on the real thing: a real
``timeline serve`` on a real Redis, the ``timeline dead-letters`` commands as child processes,
``GET /dead-letters`` over HTTP. Poison is published, listed, exported, edited, resubmitted and
stored (its dead letter gone); one that fails again stays with its new reason; dead letters
planted the way a validator bug would have left them are replayed after the "fix"; a drop is
logged and audited; two replays at once, or one cut short, neither lose nor double anything."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import redis
from e2e_support import report_event, settle, store_counts

pytestmark = pytest.mark.e2e

TIMELINE = str(Path(sys.executable).parent / "timeline")
TOKEN = "dead-letter-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def run(server: Any, *args: str, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TIMELINE, "dead-letters", *args], env={**server.env, "COLUMNS": "200"}, capture_output=True, text=True,
        input=stdin, timeout=timeout,
    )


def compact(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()


def letters(client: redis.Redis, server: Any) -> dict[str, dict[str, bytes]]:
    return {i.decode(): {k.decode(): v for k, v in f.items()} for i, f in client.xrange(server.dead_stream)}


def by_source(client: redis.Redis, server: Any, entry: bytes) -> str:
    found = [i for i, f in letters(client, server).items() if f["source_id"] == entry]
    assert len(found) == 1, found
    return found[0]


def audit(client: redis.Redis, server: Any) -> list[dict[str, str]]:
    return [{k.decode(): v.decode() for k, v in f.items()} for _, f in client.xrange(server.dead_stream + ":audit")]


def plant(client: redis.Redis, server: Any, event: bytes, n: int = 1) -> list[str]:
    """Dead letters as a validator bug would have left them (the contract's fields, XADD'ed)."""
    with client.pipeline(transaction=False) as pipe:
        for i in range(n):
            pipe.xadd(server.dead_stream, {
                "event": event, "reason": "schema", "source_id": f"1-{i}",
                "error": "event: cannot be validated (OverflowError: int too large to convert to float)",
            })
        return [i.decode() for i in pipe.execute()]


@pytest.fixture
def server(serve: Any, redis_client: redis.Redis, stream_name: str) -> Any:
    yield serve(token=TOKEN)
    redis_client.delete(stream_name + ":dead:audit")


def test_the_whole_workflow(server: Any, redis_client: redis.Redis, tmp_path: Path) -> None:
    client, http = redis_client, server.client()
    fixable = report_event(1, prefix="dl")
    del fixable["headline"]
    poison = {
        "fix-text": compact(fixable),  # schema: no headline; fixed by editing the text
        "fix-object": b'{"id":"dl-2","kind":"report","occurred_at":"2025-05-24","headline":"Half',  # bad_json
        "fails-again": b'{"id":"dl-3","kind":"report"',  # bad_json; edited into a schema error
        "not-utf8": b'{"id":"dl-4","headline":"\xff\xfe"}',  # bad_json, bytes that are not UTF-8
    }
    entries = {name: client.xadd(server.stream, {"event": data}) for name, data in poison.items()}
    settle(server, client)
    ids = {name: by_source(client, server, entry) for name, entry in entries.items()}

    # --- listed through the API (the token is needed even to read) -------------------------
    assert http.get("/dead-letters").status_code == 401
    page = http.get("/dead-letters", headers=AUTH).json()
    listed = {d["id"]: d for d in page["dead_letters"]}
    assert set(listed) == set(ids.values()) and page["next_cursor"] is None
    assert listed[ids["fix-object"]]["event"] == poison["fix-object"].decode()
    assert listed[ids["fix-object"]]["reason"] == "bad_json" and listed[ids["fix-object"]]["event_base64"] is None
    not_utf8 = listed[ids["not-utf8"]]
    assert not_utf8["event"] is None and not_utf8["event_base64"] == "eyJpZCI6ImRsLTQiLCJoZWFkbGluZSI6Iv/+In0="
    assert listed[ids["fix-text"]]["error"].startswith("headline")
    schema_only = http.get("/dead-letters", params={"reason": "schema"}, headers=AUTH).json()["dead_letters"]
    assert [d["id"] for d in schema_only] == [ids["fix-text"]]
    one = http.get("/dead-letters", params={"limit": 1}, headers=AUTH).json()
    two = http.get("/dead-letters", params={"limit": 3, "cursor": one["next_cursor"]}, headers=AUTH).json()
    assert [d["id"] for d in one["dead_letters"] + two["dead_letters"]] == list(listed)

    # --- and through the CLI ----------------------------------------------------------------
    table = run(server, "list")
    assert table.returncode == 0, table.stderr
    assert all(i in table.stdout for i in ids.values()) and "bad_json" in table.stdout
    as_json = run(server, "list", "--reason", "bad_json", "--json")
    assert [json.loads(line)["id"] for line in as_json.stdout.splitlines()] == [
        ids["fix-object"], ids["fails-again"], ids["not-utf8"]
    ]
    assert run(server, "list", "--reason", "nonsense").returncode == 2

    # --- exported, edited, resubmitted ------------------------------------------------------
    exported = tmp_path / "dead.jsonl"
    done = run(server, "export", str(exported))
    assert done.returncode == 0, done.stderr
    lines = {d["id"]: d for d in map(json.loads, exported.read_text().splitlines())}
    assert lines == listed
    edited = [
        {**lines[ids["fix-text"]], "event": lines[ids["fix-text"]]["event"].replace('"kind"', '"headline":"Fixed","kind"')},
        {**lines[ids["fix-object"]], "event": report_event(2, prefix="dl")},
        {**lines[ids["fails-again"]], "event": {"id": "dl-3", "kind": "report", "occurred_at": "yesterday"}},
    ]
    fixes = tmp_path / "fixed.jsonl"
    fixes.write_text("".join(json.dumps(line) + "\n" for line in edited))
    done = run(server, "resubmit", str(fixes))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "resubmit: 2 stored (dead letter removed), 1 dead-lettered again" in done.stdout
    assert f"{ids['fails-again']}: dead-lettered again, schema occurred_at" in done.stderr.replace("\n", " ")
    assert http.get("/events/dl-1").json()["headline"] == "Fixed"
    assert http.get("/events/dl-2").status_code == 200
    now = letters(client, server)
    assert ids["fix-text"] not in now and ids["fix-object"] not in now and ids["fails-again"] not in now
    again = [(i, f) for i, f in now.items() if f["event"] == compact(edited[2]["event"])]
    assert len(again) == 1 and again[0][1]["reason"] == b"schema"  # it stays, with its new reason
    assert f"now dead letter {again[0][0]}" in done.stderr
    records = {r["dead_letter"]: r for r in audit(client, server)}
    assert records[ids["fix-text"]]["action"] == "stored" and records[ids["fix-text"]]["command"] == "resubmit"
    assert records[ids["fails-again"]]["replaced_by"] == again[0][0]
    assert records[ids["fails-again"]]["new_reason"] == "schema"

    # --- the same file again (a second operator): every line's dead letter is gone ----------
    done = run(server, "resubmit", str(fixes))
    assert done.returncode == 0 and "resubmit: 3 already gone" in done.stdout
    assert store_counts(server.db)[0] == 2

    # --- dropped after a decision: logged and audited ---------------------------------------
    done = run(server, "drop", ids["not-utf8"], "999-0")
    assert done.returncode == 1  # 999-0 is no dead letter
    assert f"dropped {ids['not-utf8']} (bad_json" in done.stderr and "no dead letter 999-0" in done.stderr
    assert ids["not-utf8"] not in letters(client, server)
    dropped = [r for r in audit(client, server) if r["action"] == "dropped"]
    assert [(r["dead_letter"], r["command"], r["reason"]) for r in dropped] == [(ids["not-utf8"], "drop", "bad_json")]
    assert dropped[0]["operator"]


def test_replay_after_a_fix_stores_an_event_without_id_once(server: Any, redis_client: redis.Redis) -> None:
    """Two dead letters of the same event without an id (a validator bug refused it twice): the
    replay publishes the bytes unchanged, the derived id is the same, the store holds it once."""
    client = redis_client
    event = report_event(7, prefix="noid")
    del event["id"]
    planted = plant(client, server, json.dumps(event, indent=1).encode(), n=2)
    assert run(server, "replay").returncode == 2  # ids, --reason or --all: one of them
    done = run(server, "replay", "--reason", "schema")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "replay: 2 stored (dead letter removed)" in done.stdout
    settle(server, client)
    assert store_counts(server.db)[:2] == (1, 1)
    assert letters(client, server) == {}
    assert {r["dead_letter"] for r in audit(client, server)} == set(planted)


def test_a_replay_that_fails_again_is_replaced_not_read_again(server: Any, redis_client: redis.Redis) -> None:
    """What a replay dead-letters again lands at the stream's end: --all stops where the stream
    ended when it began (it would otherwise replay its own new dead letters for ever)."""
    client = redis_client
    planted = plant(client, server, b'{"kind": "report"', n=3)  # still bad_json after the "fix"
    done = run(server, "replay", "--all")
    assert done.returncode == 1 and "replay: 3 dead-lettered again" in done.stdout
    now = letters(client, server)
    assert len(now) == 3 and not set(planted) & set(now)
    assert {f["reason"] for f in now.values()} == {b"bad_json"}
    done = run(server, "replay", *now)  # by id
    assert done.returncode == 1 and "3 dead-lettered again" in done.stdout
    assert len(letters(client, server)) == 3


def test_a_no_event_dead_letter_is_not_replayed(server: Any, redis_client: redis.Redis, stream_name: str) -> None:
    entry = redis_client.xadd(stream_name, {"payload": "{}"})
    settle(server, redis_client)
    letter = by_source(redis_client, server, entry)
    done = run(server, "replay", letter)
    assert done.returncode == 1 and "replay: 1 not sent" in done.stdout
    assert f"{letter}: not sent: the entry had no event" in done.stderr.replace("\n", " ")
    assert set(letters(redis_client, server)) == {letter} and redis_client.xlen(stream_name) <= 1


def test_two_operators_replaying_at_once_lose_and_double_nothing(server: Any, redis_client: redis.Redis) -> None:
    client = redis_client
    with_ids = [compact(report_event(i, prefix="both")) for i in range(1500)]
    without = [compact({k: v for k, v in report_event(i, prefix="anon").items() if k != "id"}) for i in range(500)]
    for data in with_ids + without:
        plant(client, server, data)
    results: list[subprocess.CompletedProcess[str]] = []
    threads = [threading.Thread(target=lambda: results.append(run(server, "replay", "--all", timeout=300))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(r.returncode == 0 for r in results), [r.stdout + r.stderr for r in results]
    settle(server, client)
    assert store_counts(server.db)[:2] == (2000, 2000)
    assert letters(client, server) == {}
    removed = [r["dead_letter"] for r in audit(client, server)]
    assert len(removed) == len(set(removed)) == 2000  # each removal audited once


def test_a_replay_cut_short_loses_nothing(server: Any, redis_client: redis.Redis) -> None:
    """The server stops while a replay waits: nothing is stored, so every dead letter stays; the
    server comes back and stores what was published; the replay run again removes them all
    (the events are already stored: duplicates, not stored twice)."""
    client = redis_client
    planted = [plant(client, server, compact(report_event(i, prefix="cut")))[0] for i in range(50)]
    server.terminate()
    done = run(server, "replay", "--all", "--timeout", "1")
    assert done.returncode == 1 and "replay: 50 not settled in time" in done.stdout
    assert set(letters(client, server)) == set(planted)
    server.start()
    settle(server, client)
    assert store_counts(server.db)[:2] == (50, 50)
    done = run(server, "replay", "--all")
    assert done.returncode == 0 and "50 stored" in done.stdout
    settle(server, client)
    assert store_counts(server.db)[:2] == (50, 50)
    assert letters(client, server) == {}


def test_no_consumer_nothing_is_published(serve: Any, redis_client: redis.Redis, stream_name: str) -> None:
    server = serve(autostart=False)
    plant(redis_client, server, compact(report_event(1)))
    done = run(server, "replay", "--all")
    assert done.returncode == 1 and "nothing was published" in done.stderr
    assert redis_client.xlen(stream_name) == 0


def test_a_dead_letter_named_twice_in_a_file_is_resubmitted_once(server: Any, redis_client: redis.Redis, tmp_path: Path) -> None:
    """Two lines naming one dead letter (two edits of it): the second was published too and its
    outcome reported for both lines (the first line, stored, was told 'dead-lettered again').
    The first line is resubmitted; the second is skipped, naming the line that had it."""
    client = redis_client
    [planted] = plant(client, server, b'{"kind": "report"')
    first = report_event(1, prefix="twice")
    second = dict(first, headline="another edit of the same dead letter")
    fixes = tmp_path / "fixes.jsonl"
    fixes.write_text("".join(json.dumps({"id": planted, "event": e}) + "\n" for e in (first, second)))
    done = run(server, "resubmit", str(fixes))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "resubmit: 1 stored (dead letter removed), 1 lines unreadable" in done.stdout, done.stdout + done.stderr
    assert f"line 2: dead letter {planted} is resubmitted by line 1" in " ".join(done.stderr.split()), done.stderr
    settle(server, client)
    assert letters(client, server) == {}
    with server.client() as http:
        assert http.get(f"/events/{first['id']}").json()["headline"] == first["headline"]
