"""The commands as a user runs them: `timeline demo` on a fresh folder with nothing configured
(an embedded Redis server starts and stops with it), then `show`, `publish` and `rebuild`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

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
    assert "accepted 1, rejected 2" in published.stdout
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
    assert "accepted 20, rejected 0" in done.stdout
    entries = redis_client.xrange(stream_name)
    assert len(entries) == 20 and all(set(fields) == {b"event"} for _, fields in entries)
    assert run(["publish", str(tmp_path / "missing.jsonl")], tmp_path, REDIS_URL=redis_url).returncode == 2


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
