"""JSON Lines saved with a UTF-8 byte order mark (Notepad, PowerShell's `Out-File`, Excel's
"CSV UTF-8" habits): the mark is the file's, not the first event's. `timeline publish`,
and `timeline import` read the first line without it; they rejected it as bad_json
("Unexpected UTF-8 BOM"). RFC 8259 lets a parser ignore the mark. (`dead-letters resubmit`
already did: Python's json detects the mark in bytes.)"""

from __future__ import annotations

import codecs
import json

import pytest
import redis

from test_cli import run

pytestmark = pytest.mark.e2e


def lines(prefix: str, n: int = 2) -> bytes:
    events = [{"id": f"{prefix}-{i}", "kind": "report", "occurred_at": "2025-05", "headline": f"Saved with a BOM {i}",
               "entities": [{"name": "Windows User"}]} for i in range(n)]
    return codecs.BOM_UTF8 + b"\r\n".join(json.dumps(e).encode() for e in events) + b"\r\n"


def test_a_byte_order_mark_at_the_start_of_a_file_is_not_part_of_its_first_event(
        tmp_path, redis_url: str, stream_name: str, redis_client: redis.Redis) -> None:
    source = tmp_path / "bom.jsonl"
    source.write_bytes(lines("pub"))
    env = {"REDIS_URL": redis_url, "TIMELINE_STREAM": stream_name}
    published = run(["publish", str(source)], tmp_path, **env)
    assert "published 2, rejected 0" in published.stdout, published.stdout + published.stderr
    first = redis_client.xrange(stream_name, count=1)[0][1][b"event"]
    assert json.loads(first)["id"] == "pub-0" and not first.startswith(codecs.BOM_UTF8)
    piped = run(["publish", "-"], tmp_path, stdin=lines("pipe"), **env)  # (stdin is read as text here)
    assert "published 2, rejected 0" in piped.stdout, piped.stdout + piped.stderr

    imported = tmp_path / "import.jsonl"
    imported.write_bytes(lines("imp", 3))
    done = run(["import", str(imported), "-q"], tmp_path, TIMELINE_DB=str(tmp_path / "data" / "timeline.db"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "stored 3" in done.stdout and "rejected 0" in done.stdout, done.stdout
