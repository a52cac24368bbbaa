"""The commands as a user runs them: `timeline demo` on a fresh folder with nothing configured
(an embedded Redis server starts and stops with it), then `show`, `publish` and `rebuild`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from e2e_support import jsonl, report_event, store_counts

pytestmark = pytest.mark.e2e

TIMELINE = str(Path(sys.executable).parent / "timeline")


def run(args: list[str], cwd: Path, stdin: bytes | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TIMELINE_") and k != "REDIS_URL"}
    clean.update(env)
    clean["COLUMNS"] = "200"
    return subprocess.run(
        [TIMELINE, *args], cwd=cwd, env=clean, capture_output=True, timeout=180,
        input=stdin.decode() if stdin is not None else None, text=True,
    )


def test_demo_on_a_fresh_folder_then_show_publish_and_rebuild(tmp_path: Path) -> None:
    first = run(["demo"], tmp_path)
    assert first.returncode == 0, first.stderr
    out = first.stdout
    assert "Elon Musk [elon-musk]" in out and "X [x] (also: twitter)" in out
    assert "X goes down for about two hours worldwide" in out
    assert "Musk reportedly joins Trump's Oval Office meeting" in out  # the correction applied
    assert (tmp_path / "data" / "timeline.db").is_file()
    assert not (tmp_path / "data" / "redis" / "redis.port").exists()  # the embedded server stopped

    again = run(["demo"], tmp_path)
    assert again.returncode == 0, again.stderr
    conn = __import__("sqlite3").connect(tmp_path / "data" / "timeline.db")
    assert conn.execute("SELECT COUNT(*), COUNT(DISTINCT event_id) FROM events").fetchone() == (16, 16)
    conn.close()

    shown = run(["show", "twitter"], tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "X [x]" in shown.stdout and "Twitter begins rebranding as X" in shown.stdout
    as_json = json.loads(run(["show", "elon-musk", "--json", "--since", "2025-05-24"], tmp_path).stdout)
    assert {e["occurred_at"] for e in as_json["entries"]} == {"2025-05-24", "2025", "2025-05"}
    assert run(["show", "nobody-at-all"], tmp_path).returncode == 1

    lines = [
        json.dumps({"kind": "report", "occurred_at": "2025-06", "headline": "A later report",
                    "entities": [{"name": "Elon Musk", "role": "subject"}]}),
        "{not json",
        json.dumps({"kind": "report", "occurred_at": "2025-06"}),
    ]
    published = run(["publish", "-"], tmp_path, stdin="\n".join(lines).encode())
    assert published.returncode == 1
    assert "published 1, rejected 2" in published.stdout
    assert "line 2: bad_json" in published.stderr and "line 3: schema" in published.stderr

    rebuilt = run(["rebuild"], tmp_path)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "rebuilt entities, related, search, timelines" in rebuilt.stdout
    assert run(["rebuild", "nonsense"], tmp_path).returncode == 2


def test_publish_reaches_a_given_redis(tmp_path: Path, redis_url: str, stream_name: str,
                                       redis_client: redis.Redis) -> None:
    source = tmp_path / "events.jsonl"
    source.write_text(
        "\n".join(
            json.dumps({"kind": "report", "occurred_at": f"2025-05-{d:02d}", "headline": f"Day {d}",
                        "entities": [{"name": "Somebody"}]})
            for d in range(1, 21)
        )
    )
    done = run(["publish", str(source)], tmp_path, REDIS_URL=redis_url, TIMELINE_STREAM=stream_name)
    assert done.returncode == 0, done.stderr
    assert "published 20, rejected 0" in done.stdout
    # a stream no server has read: said so, the entries stay for when one does
    assert "nothing is reading the stream" in done.stderr and "no consumer group 'store'" in done.stderr
    entries = redis_client.xrange(stream_name)
    assert len(entries) == 20 and all(set(fields) == {b"event"} for _, fields in entries)
    assert run(["publish", str(tmp_path / "missing.jsonl")], tmp_path, REDIS_URL=redis_url).returncode == 2


def test_publish_wait_prints_each_dead_lettered_line_and_fails(tmp_path: Path, serve, redis_client: redis.Redis) -> None:
    server = serve()
    env = {"REDIS_URL": server.redis_url, "TIMELINE_STREAM": server.stream}
    first = tmp_path / "first.jsonl"
    first.write_bytes(jsonl([report_event(1, prefix="cli")]))
    plain = run(["publish", str(first)], tmp_path, **env)
    assert plain.returncode == 0, plain.stderr
    assert "published 1, rejected 0" in plain.stdout and "stored" not in plain.stdout  # published, not stored
    assert "nothing is reading" not in plain.stderr
    conflicting = report_event(1, prefix="cli", headline="Same id, other content")
    second = tmp_path / "second.jsonl"
    second.write_bytes(jsonl([report_event(2, prefix="cli"), conflicting, report_event(3, prefix="cli")]) + b"{bad\n")

    waited = run(["publish", "--wait", str(second)], tmp_path, **env)
    assert waited.returncode == 1, waited.stdout + waited.stderr
    assert "published 3, rejected 1; stored 2, dead-lettered 1" in waited.stdout, waited.stdout + waited.stderr
    assert "line 4: bad_json" in waited.stderr
    dead_line = next(line for line in waited.stderr.splitlines() if "dead-lettered" in line)
    assert dead_line.startswith("line 2: dead-lettered id_conflict") and "id" in dead_line.split("id_conflict", 1)[1]
    # the others are stored by the time it answers; the first version of cli-1 stays
    assert store_counts(server.db)[:2] == (3, 3)
    conn = __import__("sqlite3").connect(server.db)
    assert conn.execute("SELECT COUNT(*) FROM events WHERE event_id = 'cli-1' AND body LIKE '%other content%'").fetchone() == (0,)
    conn.close()

    ok = run(["publish", "--wait", str(first)], tmp_path, **env)  # the same event again: a no-op, stored
    assert ok.returncode == 0, ok.stderr
    assert "published 1, rejected 0; stored 1, dead-lettered 0" in ok.stdout


def test_publish_wait_gives_up_after_its_timeout(tmp_path: Path, redis_url: str, stream_name: str,
                                                 redis_client: redis.Redis) -> None:
    redis_client.xgroup_create(stream_name, "store", id="0", mkstream=True)
    redis_client.xgroup_createconsumer(stream_name, "store", "gone")  # a server that read once, now stopped
    source = tmp_path / "events.jsonl"
    source.write_bytes(jsonl([report_event(i, prefix="late") for i in range(2)]))
    started = time.monotonic()
    done = run(["publish", "--wait", "--timeout", "1", str(source)], tmp_path, REDIS_URL=redis_url,
               TIMELINE_STREAM=stream_name)
    assert done.returncode == 1 and time.monotonic() - started < 30, done.stdout + done.stderr
    assert "published 2, rejected 0; stored 0, dead-lettered 0, not settled after 1 s: 2" in done.stdout
    assert "2 published events were neither stored nor dead-lettered within 1 s" in done.stderr
    assert run(["publish", "--wait", "--timeout", "0", str(source)], tmp_path, REDIS_URL=redis_url,
               TIMELINE_STREAM=stream_name).returncode == 2  # a timeout must be positive


def test_publish_where_no_server_reads_says_so(tmp_path: Path, serve) -> None:
    source = tmp_path / "events.jsonl"
    source.write_bytes(jsonl([report_event(i, prefix="lone") for i in range(2)]))
    alone = run(["publish", str(source)], tmp_path)  # no REDIS_URL, no server: its own embedded Redis
    assert alone.returncode == 0, alone.stderr
    assert "nothing is reading the stream news:events" in alone.stderr
    assert "no `timeline serve` runs for this folder" in alone.stderr
    assert "published 2, rejected 0; nothing is reading them yet" in alone.stdout
    started = time.monotonic()
    waited = run(["publish", "--wait", "--timeout", "60", str(source)], tmp_path)
    assert waited.returncode == 1 and time.monotonic() - started < 30  # fails fast instead of waiting
    assert "nothing is reading the stream" in waited.stderr and "not waited for" in waited.stderr

    # the entries waited in the folder's Redis: a server started there stores them
    server = serve(REDIS_URL="", stream="news:events", db=tmp_path / "data" / "timeline.db")
    deadline = time.monotonic() + 30
    while store_counts(server.db)[1] < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert store_counts(server.db)[1] == 2
    shared = run(["publish", "--wait", str(source)], tmp_path)  # the server's embedded Redis, shared
    assert shared.returncode == 0, shared.stderr
    assert "nothing is reading" not in shared.stderr
    assert "published 2, rejected 0; stored 2, dead-lettered 0" in shared.stdout


def test_every_command_has_help_and_is_documented() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    listed = subprocess.run([TIMELINE, "--help"], capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    for command in ("serve", "publish", "show", "rebuild", "demo", "verify"):
        assert command in listed.stdout
        helped = subprocess.run([TIMELINE, command, "--help"], capture_output=True, text=True)
        assert helped.returncode == 0 and len(helped.stdout) > 80, command
        assert f"timeline {command}" in readme, f"README never shows `timeline {command}`"
    ci = (Path(__file__).resolve().parents[2] / ".ci" / "run").read_text()
    test_command = "python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]' && .venv/bin/pytest"
    assert test_command in readme and test_command in ci


def test_an_export_piped_into_head_ends_quietly(tmp_path: Path) -> None:
    """`timeline export --all | head -1`: the reader closes the pipe early; the export stops
    without an error message or a traceback (as `cat` does), and the line read is whole."""
    imported = run(["import", "-"], tmp_path, stdin=jsonl([report_event(i, prefix="pipe") for i in range(3000)]))
    assert imported.returncode == 0, imported.stderr
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TIMELINE_") and k != "REDIS_URL"}
    piped = subprocess.run(
        ["bash", "-c", f"set -o pipefail; '{TIMELINE}' export --all --format ndjson | head -1"],
        cwd=tmp_path, env=clean, capture_output=True, timeout=180, text=True,
    )
    assert piped.stderr == ""
    assert piped.returncode in (0, 141)  # 141: ended by the closed pipe, as a shell reports SIGPIPE
    assert json.loads(piped.stdout)["event_id"].startswith("pipe-")
