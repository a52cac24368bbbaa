"""Poison that used to break the validator, on the real thing (issue 14, point 1): a real Redis
stream read by a real ``timeline serve``, ``POST /events`` over HTTP, ``timeline publish``.

Each hostile text of ``tests/hostile.py`` used to make validation raise: its entry was never
dead-lettered nor acknowledged (delivered again and again, the validating process restarted,
the valid events of its batch held up), ``POST /events`` answered 500, and ``timeline publish``
died with a traceback before sending any line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from e2e_support import dead_letters, pending, settle, store_counts, undelivered
from hostile import BOUNDARY, POISON, report, write
from timeline.publisher import Publisher

pytestmark = pytest.mark.e2e

TIMELINE = str(Path(sys.executable).parent / "timeline")
# what the service logs when judging an entry raised (the net caught what no rule foresaw), or
# when a validating process had to be replaced
NOT_FORESEEN = ("cannot be validated", "cannot be checked", "a validating process failed", "Traceback")


def valid(i: int) -> dict[str, Any]:
    return report(id=f"ok-{i}", headline=f"Valid event {i}", entities=[{"name": f"Entity {i % 3}"}])


@pytest.mark.parametrize("validators", ["1", "0"], ids=["validating-process", "in-process"])
def test_poison_beside_valid_events_is_dead_lettered_once_and_nothing_stays_pending(
    serve, backend: str, redis_client: redis.Redis, stream_name: str, validators: str
) -> None:
    server = serve(TIMELINE_VALIDATORS=validators)
    poison: dict[bytes, tuple[str, bytes, str, str]] = {}  # entry id -> name, bytes, reason, field
    with redis_client.pipeline(transaction=False) as pipe:
        for i, (name, text, reason, field) in enumerate(POISON):
            pipe.xadd(stream_name, {"event": write(valid(i))})
            pipe.xadd(stream_name, {"event": text.encode()})
        for j, (_, event) in enumerate(BOUNDARY):
            pipe.xadd(stream_name, {"event": write({**event, "id": f"edge-{j}"})})
        ids = pipe.execute()
    for i, (name, text, reason, field) in enumerate(POISON):
        poison[ids[2 * i + 1]] = (name, text.encode(), reason, field)

    settle(server, redis_client, timeout=60)
    time.sleep(1.5)  # longer than TIMELINE_CLAIM_IDLE_SECONDS: nothing comes back to be judged again
    settle(server, redis_client, timeout=30)

    letters = dead_letters(redis_client, stream_name)
    by_source: dict[bytes, list[dict[str, bytes]]] = {}
    for letter in letters:
        by_source.setdefault(letter["source_id"], []).append(letter)
    problems = []
    for entry_id, (name, data, reason, field) in poison.items():
        found = by_source.pop(entry_id, [])
        if len(found) != 1:
            problems.append(f"{name}: {len(found)} dead letters")
            continue
        letter = found[0]
        error = letter["error"].decode("utf-8")
        if (letter["reason"].decode(), letter["event"]) != (reason, data) or field not in error:
            problems.append(f"{name}: {letter['reason']!r} {error!r}, expected {reason} naming {field!r}")
    if by_source:
        problems.append(f"dead letters for valid entries: {[l[0]['event'][:80] for l in by_source.values()]}")
    assert not problems, "\n".join(problems) + "\nserver stderr:\n" + server.stderr()

    valid_count = len(POISON) + len(BOUNDARY)
    assert store_counts(server.db)[:2] == (valid_count, valid_count)
    assert (pending(redis_client, stream_name), undelivered(redis_client, stream_name)) == (0, 0)
    logged = server.stderr()
    assert not [sign for sign in NOT_FORESEEN if sign in logged], logged
    assert server.process is not None and server.process.poll() is None
    with server.client() as http:
        assert http.get("/health").json()["status"] == "ok"
        assert http.get("/events/ok-0").json()["headline"] == "Valid event 0"
        assert http.get("/events/self-1").status_code == 404  # the correction of itself was refused
        assert http.get("/events/edge-0").json()["occurred_at"] == "9999-12-31"
        timeline = http.get("/timeline", params={"limit": 500}).json()["entries"]
        assert {e["event_id"] for e in timeline} >= {"ok-0", "edge-0", "edge-1"}


def test_post_events_answers_poison_with_a_rejection_never_a_5xx(serve, redis_client: redis.Redis) -> None:
    server = serve()
    problems = []
    with server.client() as http:
        for i, (name, text, reason, field) in enumerate(POISON):
            alone = http.post("/events", content=text.encode(), headers={"content-type": "application/json"})
            array = f"[{write(valid(i))},{text}]".encode()
            both = http.post("/events?wait=true", content=array, headers={"content-type": "application/json"})
            for label, response, index in (("alone", alone, 0), ("beside a valid one", both, 1)):
                if response.status_code >= 500:
                    problems.append(f"{name} ({label}): {response.status_code} {response.text[:200]}")
                elif reason == "bad_json":  # the body cannot be read: the whole request is refused
                    if response.status_code != 422 or "body" not in response.json()["error"]:
                        problems.append(f"{name} ({label}): {response.status_code} {response.text[:200]}")
                else:
                    body = response.json()
                    rejected = body.get("rejected", [])
                    if (
                        response.status_code not in (201, 202)
                        or [(r["index"], r["reason"]) for r in rejected] != [(index, reason)]
                        or field not in rejected[0]["error"]
                    ):
                        problems.append(f"{name} ({label}): {response.status_code} {response.text[:300]}")
                    elif index == 1 and (response.status_code, body["accepted"]) != (201, [f"ok-{i}"]):
                        problems.append(f"{name} ({label}): the valid event not stored: {body}")
        assert http.get("/health").json()["status"] == "ok"
    assert not problems, "\n".join(problems) + "\nserver stderr:\n" + server.stderr()
    assert dead_letters(redis_client, server.stream) == []  # rejected here: answered, not dead-lettered


def run_publish(source: Path, redis_url: str, stream: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIMELINE_")}
    env.update({"REDIS_URL": redis_url, "TIMELINE_STREAM": stream, "COLUMNS": "200"})
    return subprocess.run([TIMELINE, "publish", str(source)], env=env, capture_output=True, text=True, timeout=120)


def test_publish_sends_the_lines_around_a_bad_one_and_exits_non_zero(
    tmp_path: Path, redis_url: str, stream_name: str, redis_client: redis.Redis
) -> None:
    lines = [write(valid(0))]
    for i, (_, text, _, _) in enumerate(POISON, start=1):
        lines += [text, write(valid(i))]
    source = tmp_path / "events.jsonl"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")

    done = run_publish(source, redis_url, stream_name)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert f"published {len(POISON) + 1}, rejected {len(POISON)}" in done.stdout, done.stdout + done.stderr
    for i, (name, _, reason, _) in enumerate(POISON[:20]):  # the first 20 rejected lines are listed
        assert f"line {2 * i + 2}: {reason}" in done.stderr, (name, done.stderr)
    sent = [json.loads(fields[b"event"])["id"] for _, fields in redis_client.xrange(stream_name)]
    assert sent == [f"ok-{i}" for i in range(len(POISON) + 1)]

    # the library the command uses: a report, not an exception
    redis_client.delete(stream_name)
    with Publisher(redis_url, stream_name) as publisher:
        published = publisher.publish(lines)
    assert published.accepted == [f"ok-{i}" for i in range(len(POISON) + 1)]
    assert [(r.index, r.reason) for r in published.rejected] == [
        (2 * i + 1, reason) for i, (_, _, reason, _) in enumerate(POISON)
    ]
    assert redis_client.xlen(stream_name) == len(POISON) + 1
